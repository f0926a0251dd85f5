fn main() {
    println!("pglm: under construction");
}

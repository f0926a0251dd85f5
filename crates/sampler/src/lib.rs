//! pglm-sampler (under construction; see the issues).

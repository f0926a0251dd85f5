//! pglm-model (under construction; see the issues).

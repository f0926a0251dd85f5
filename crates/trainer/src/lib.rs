//! pglm-trainer (under construction; see the issues).

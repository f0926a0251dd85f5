//! pglm-rewards (under construction; see the issues).

//! Checkpoint container (being written).

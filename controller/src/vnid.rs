//! VNID allocation.

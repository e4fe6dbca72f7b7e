//! PostgreSQL backend of the DCB event store (work in progress).

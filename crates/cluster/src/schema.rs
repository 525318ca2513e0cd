//! The cluster's tables.

/// The schema, created at start if missing (under an advisory lock, so that
/// nodes starting together do not race).
pub(crate) const SCHEMA: &[&str] = &[
    "create table if not exists tenax_uploads (
        id text primary key,
        namespace text not null,
        record text not null,
        state bytea,
        fence bigint not null default 0,
        holder text,
        lease_until timestamptz,
        released bigint not null default 0
    )",
    "create table if not exists tenax_names (
        namespace text not null, name text not null, upload text not null,
        primary key (namespace, name)
    )",
    "create table if not exists tenax_published (
        namespace text not null, name text not null, upload text not null, size bigint not null,
        primary key (namespace, name)
    )",
    "create table if not exists tenax_active (
        upload text primary key, namespace text not null, size bigint not null
    )",
    "create index if not exists tenax_active_namespace on tenax_active (namespace)",
    "create table if not exists tenax_finals (
        part text not null, final text not null, primary key (part, final)
    )",
];

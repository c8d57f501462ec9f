// Package admin is Loom's administration: admin users with argon2id password hashes,
// short-lived sign-in tokens, throttled sign-in, the append-only admin audit log, and the
// admin HTTP API (Handler) over tenants, keys, provider configurations and spend.
//
// Sign-in tokens are opaque: "loomadm_" and 32 random bytes, stored only as their SHA-256
// with an expiry. Verifying one is a lookup in the deployment's own database, so a token
// from another deployment, a tampered one, an expired one or a JWT of any "alg" is simply
// unknown; signing out deletes the row, which ends the token at once on every replica;
// and there is no signing key to leak or rotate.
//
// The package never imports the root package: the gateway mounts a Handler (see
// loom.Config.Admin) and hands it a Tenancy bound to its caches. Users works without HTTP
// too, for the command line. Stores: PostgresStore and SQLiteStore, over the tables of
// migration 00009.
package admin

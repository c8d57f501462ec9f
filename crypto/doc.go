// Package crypto seals Loom's data at rest: trace request and response bodies and the
// upstream provider API keys in tenant configurations.
//
// Callers that also use the standard library's crypto package import it as loomcrypto:
//
//	import loomcrypto "github.com/loom-gateway/loom/crypto"
//
// # Keys
//
// The operator supplies one or more 32-byte master keys, each with a version (see
// [ParseKeyring] for the LOOM_MASTER_KEY format). Master keys never encrypt data directly:
// every tenant gets its own AES-256 data key, derived with HKDF-SHA256 (RFC 5869) as
//
//	key = HKDF-SHA256(secret = master key of the version, salt = none,
//	                  info = "loom/tenant-data-key/v1/" + tenantID, length = 32)
//
// The info string is part of the stored data's format: changing it would make every sealed
// row unreadable, so it must never change. A new derivation scheme would get a new label
// (".../v2/") and a new key version.
//
// Derived keys are cached per (key version, tenant) in a bounded LRU cache, so a process
// that sees millions of tenants keeps only the recently used ones in memory.
//
// # Sealed format
//
// [Keyring.Seal] encrypts with AES-256-GCM under a fresh random 96-bit nonce and returns
//
//	nonce (12 bytes) || ciphertext || GCM tag (16 bytes)
//
// together with the key version, which the caller stores next to the sealed bytes (the
// key_version column). The additional authenticated data binds the tenant and the record
// (the trace id for trace bodies, "provider:NAME" for a provider API key):
//
//	"loom/seal/v1" || uint32be(len(tenantID)) || tenantID || uint32be(len(recordID)) || recordID
//
// so a ciphertext copied to another row or another tenant fails to open. Random nonces are
// safe for far more messages than one tenant writes under one key version (the usual bound
// is 2^32 messages per key); rotating the master key starts fresh keys for every tenant.
//
// # Rotation
//
// A rotation adds a new master key version in front of the old ones: new rows are sealed
// with the current version, and old rows, which carry their version, still open as long as
// their version stays in the keyring. Dropping a version makes its rows unreadable
// ([ErrUnknownVersion]).
//
// Because data keys are derived rather than stored, a single tenant's key cannot be
// destroyed on its own; crypto-shredding one tenant needs randomly generated, wrapped
// per-tenant keys, which this scheme could add under a new key version.
package crypto

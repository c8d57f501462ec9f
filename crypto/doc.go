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
// [ParseKeyring] for the LOOM_MASTER_KEY format). Master keys never encrypt data directly.
// Two schemes give each tenant its own AES-256 key, and a row's key version says which:
//
//   - Envelope encryption ([Keyring.WithDataKeys]; key versions above [DataKeyVersionBase]):
//     each tenant has a random data key, created on its first seal and kept in a
//     [DataKeyStore] (the tenancy stores' tenant_data_keys table), wrapped with AES-256-GCM
//     under a wrapping key HKDF-SHA256(master key, info "loom/key-wrap/v1"), with additional
//     data "loom/data-key/v1" || uint32be(len(tenantID)) || tenantID || uint32be(version).
//     Destroying the tenant's row (a hard delete) makes its ciphertexts unreadable
//     (crypto-shredding, [ErrDataKeyDestroyed]); a master key rotation rewraps the data
//     keys ([Keyring.RewrapDataKeys]) without touching the rows they sealed.
//
//   - Derived keys (the first scheme; key versions below DataKeyVersionBase, the master
//     version itself):
//
//     key = HKDF-SHA256(secret = master key of the version, salt = none,
//     info = "loom/tenant-data-key/v1/" + tenantID, length = 32)
//
//     Rows sealed this way keep opening while their master version is in the keyring, or
//     after [Keyring.AdoptDerivedKeys] has stored the derived key wrapped like a data key.
//
// The info strings and labels are part of the stored data's format and must never change.
//
// Derived and unwrapped keys are cached per (key version, tenant) in a bounded LRU cache,
// so a process that sees millions of tenants keeps only the recently used ones in memory
// and the DataKeyStore is read on a cache miss only; [Keyring.Forget] drops a tenant.
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
// A rotation adds a new master key version in front of the old ones: new data keys are
// wrapped with the current version (and, without envelope encryption, new rows sealed with
// its derived keys); old rows, which carry their version, still open as long as the
// version that wraps (or derived) their key stays in the keyring. RewrapDataKeys and
// AdoptDerivedKeys move every key under the current version, after which the old versions
// can be dropped; dropping a version that still wraps or derived a needed key makes its
// rows unreadable ([ErrUnknownVersion]).
package crypto

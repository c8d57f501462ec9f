// Package tenancy is who may call the gateway: tenants, their API keys and their own
// provider configurations, the stores that keep them (SQLiteStore for the embedded default,
// PostgresStore for production), and the Authenticator that turns a bearer key into a
// Principal on every request.
//
// Keys look like "loom_" followed by 43 base62 characters (256 random bits). Only their
// SHA-256 is stored (HashKey), with a short display prefix; the raw key is returned once by
// Service.CreateKey and never again.
//
// The request path calls Authenticator.Authenticate, which answers from an in-process LRU
// cache and goes to the Store only on a miss. Admin writes go through Service, which purges
// the affected cache entries of its Authenticator at once, so a revoked key or a deactivated
// tenant is refused by this process from the next request on. Other replicas learn of the
// change when the Store announces it (a Notifier: PostgresStore, through LISTEN/NOTIFY,
// whoever wrote the change; hand each Change to Authenticator.Apply) or, without
// announcements or while their connection is down, when their cache entry expires
// (AuthOptions.TTL, 30s by default). SQLiteStore announces nothing: an SQLite database
// serves one process.
//
// Provider configurations are written only through Service.PutProviderConfig, which seals
// the upstream API key with the Service's Sealer (WithSealer; crypto.Keyring is one) and
// keeps its last four characters; ProviderConfig.OpenAPIKey opens it again.
//
// Wiring, one Authenticator per process that serves traffic:
//
//	store := tenancy.NewPostgresStore(pool)
//	auth := tenancy.NewAuthenticator(store, tenancy.AuthOptions{})
//	admin := tenancy.NewService(store, auth)
//	// request path: p, err := auth.Authenticate(ctx, bearer)
//	// admin API:    admin.RevokeKey(ctx, tenantID, keyID)
package tenancy

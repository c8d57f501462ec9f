package tenancy

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	loomcrypto "github.com/loom-gateway/loom/crypto"
)

func TestSQLiteStoreAdmin(t *testing.T) {
	testStoreAdmin(t, func(t *testing.T) Store { return newSQLiteStore(t) })
}

func TestPostgresStoreAdmin(t *testing.T) {
	testStoreAdmin(t, func(t *testing.T) Store { return newPostgresStore(t) })
}

// rawSealedKey reads a provider config's sealed_api_key column as the database holds it.
func rawSealedKey(t *testing.T, s Store, tenantID, name string) []byte {
	t.Helper()
	var b []byte
	var err error
	switch s := s.(type) {
	case *SQLiteStore:
		err = s.db.QueryRowContext(context.Background(),
			`SELECT sealed_api_key FROM provider_configs WHERE tenant_id = ? AND name = ?`, tenantID, name).Scan(&b)
	case *PostgresStore:
		err = s.pool.QueryRow(context.Background(),
			`SELECT sealed_api_key FROM provider_configs WHERE tenant_id = $1 AND name = $2`, tenantID, name).Scan(&b)
	default:
		t.Fatalf("unknown store %T", s)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testKeyring(t *testing.T) *loomcrypto.Keyring {
	t.Helper()
	k, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testStoreAdmin(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()

	t.Run("rename", func(t *testing.T) {
		s := newStore(t)
		svc := NewService(s, nil)
		acme, err := svc.CreateTenant(ctx, "Acme")
		if err != nil {
			t.Fatal(err)
		}
		html := `<img src=x onerror=alert(1)> Acme & Co`
		if err := svc.RenameTenant(ctx, acme.ID, html); err != nil {
			t.Fatal(err)
		}
		got, err := svc.GetTenant(ctx, acme.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != html {
			t.Errorf("name after rename = %q, want %q stored as given", got.Name, html)
		}
		if err := svc.RenameTenant(ctx, "nobody", "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("rename of a missing tenant: %v, want ErrNotFound", err)
		}
	})

	t.Run("hostile names", func(t *testing.T) {
		s := newStore(t)
		svc := NewService(s, nil)
		acme, err := svc.CreateTenant(ctx, "Acme")
		if err != nil {
			t.Fatal(err)
		}
		bad := map[string]string{
			"empty":         "",
			"blank":         "   ",
			"NUL":           "ac\x00me",
			"invalid UTF-8": "ac\xffme",
			"newline":       "acme\nadmin logged in",
			"megabyte":      strings.Repeat("a", 1<<20),
			"one too long":  strings.Repeat("é", MaxNameLen/2) + "a",
		}
		for name, v := range bad {
			t.Run(name, func(t *testing.T) {
				if _, err := svc.CreateTenant(ctx, v); !errors.Is(err, ErrInvalidInput) {
					t.Errorf("CreateTenant: %v, want ErrInvalidInput", err)
				}
				if err := svc.RenameTenant(ctx, acme.ID, v); !errors.Is(err, ErrInvalidInput) {
					t.Errorf("RenameTenant: %v, want ErrInvalidInput", err)
				}
				if _, _, err := svc.CreateKey(ctx, acme.ID, v); !errors.Is(err, ErrInvalidInput) {
					t.Errorf("CreateKey: %v, want ErrInvalidInput", err)
				}
				if err := svc.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: v, Kind: "mock"}, ""); !errors.Is(err, ErrInvalidInput) {
					t.Errorf("PutProviderConfig name: %v, want ErrInvalidInput", err)
				}
				if err := svc.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: "own", Kind: "mock", Models: []string{v}}, ""); !errors.Is(err, ErrInvalidInput) {
					t.Errorf("PutProviderConfig model: %v, want ErrInvalidInput", err)
				}
			})
		}
		// Nothing broken was stored: the tenant kept its name and has no keys or configs.
		sums, err := svc.ListTenantSummaries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(sums) != 1 || sums[0].Name != "Acme" || sums[0].Keys != 0 {
			t.Errorf("after refused writes: %+v, want Acme alone, without keys", sums)
		}
		if cfgs, err := svc.ListProviderConfigs(ctx, acme.ID); err != nil || len(cfgs) != 0 {
			t.Errorf("configs after refused writes: %v, %v", cfgs, err)
		}
		for _, c := range []ProviderConfig{
			{TenantID: acme.ID, Name: "a/b", Kind: "mock"},
			{TenantID: acme.ID, Name: "own", Kind: "openai", BaseURL: "javascript:alert(1)"},
			{TenantID: acme.ID, Name: "own", Kind: "openai", BaseURL: "/relative"},
		} {
			if err := svc.PutProviderConfig(ctx, c, ""); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("PutProviderConfig(%+v): %v, want ErrInvalidInput", c, err)
			}
		}
	})

	t.Run("summaries", func(t *testing.T) {
		s := newStore(t)
		svc := NewService(s, nil)
		acme, _ := svc.CreateTenant(ctx, "Acme")
		globex, _ := svc.CreateTenant(ctx, "Globex")
		empty, err := svc.CreateTenant(ctx, "Empty")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, tn := range []string{acme.ID, acme.ID, acme.ID, globex.ID} {
			_, k, err := svc.CreateKey(ctx, tn, "k")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, k.ID)
		}
		if err := svc.RevokeKey(ctx, acme.ID, ids[0]); err != nil {
			t.Fatal(err)
		}
		touch := s.(KeyToucher)
		if err := touch.TouchKeys(ctx, at(30), ids[0]); err != nil {
			t.Fatal(err)
		}
		if err := touch.TouchKeys(ctx, at(40), ids[1]); err != nil {
			t.Fatal(err)
		}
		if err := touch.TouchKeys(ctx, at(35), ids[3]); err != nil {
			t.Fatal(err)
		}
		got, err := svc.ListTenantSummaries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []TenantSummary{
			{Tenant: acme, Keys: 3, ActiveKeys: 2, LastUsedAt: ptr(micro(at(40)))},
			{Tenant: globex, Keys: 1, ActiveKeys: 1, LastUsedAt: ptr(micro(at(35)))},
			{Tenant: empty},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ListTenantSummaries (-want +got):\n%s", diff)
		}
	})

	t.Run("provider configs", func(t *testing.T) {
		s := newStore(t)
		keyring := testKeyring(t)
		var changed []string
		svc := NewService(s, nil, WithSealer(keyring), WithProviderKinds("openai", "mock", "custom"),
			WithProvidersChanged(func(id string) { changed = append(changed, id) }))
		acme, _ := svc.CreateTenant(ctx, "Acme")
		globex, err := svc.CreateTenant(ctx, "Globex")
		if err != nil {
			t.Fatal(err)
		}
		const secret = "sk-proj-abcdefghijklmnop-WXYZ"
		c := ProviderConfig{TenantID: acme.ID, Name: "openai", Kind: "openai", BaseURL: "https://api.openai.com/v1",
			SealedAPIKey: []byte("caller's bytes are not stored"), KeyVersion: 7, KeyLast4: "nope"}
		if err := svc.PutProviderConfig(ctx, c, secret); err != nil {
			t.Fatal(err)
		}
		if err := svc.PutProviderConfig(ctx, ProviderConfig{TenantID: globex.ID, Name: "openai", Kind: "mock"}, ""); err != nil {
			t.Fatal(err)
		}
		raw := rawSealedKey(t, s, acme.ID, "openai")
		if len(raw) == 0 || bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte("abcdefgh")) ||
			bytes.Contains(raw, []byte("caller's")) {
			t.Fatalf("sealed_api_key column = %q: want ciphertext of the key", raw)
		}
		cfgs, err := svc.ListProviderConfigs(ctx, acme.ID)
		if err != nil || len(cfgs) != 1 {
			t.Fatalf("ListProviderConfigs: %v, %v", cfgs, err)
		}
		got := cfgs[0]
		if got.KeyLast4 != "WXYZ" || got.KeyVersion != 1 {
			t.Errorf("KeyLast4, KeyVersion = %q, %d; want WXYZ, 1", got.KeyLast4, got.KeyVersion)
		}
		if key, err := got.OpenAPIKey(keyring); err != nil || key != secret {
			t.Errorf("OpenAPIKey = %q, %v; want the key put", key, err)
		}
		// Sealed under this tenant and this config's name: passed off as another's, it does
		// not open.
		moved := got
		moved.TenantID = globex.ID
		if _, err := moved.OpenAPIKey(keyring); err == nil {
			t.Error("the key opened as another tenant's")
		}
		moved = got
		moved.Name = "other"
		if _, err := moved.OpenAPIKey(keyring); err == nil {
			t.Error("the key opened as another config's")
		}

		// Put again without a key: none is kept.
		if err := svc.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: "openai", Kind: "openai"}, ""); err != nil {
			t.Fatal(err)
		}
		if raw := rawSealedKey(t, s, acme.ID, "openai"); raw != nil {
			t.Errorf("sealed_api_key after a put without a key = %x, want NULL", raw)
		}
		// A short key's last four would give most of it away.
		if err := svc.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: "short", Kind: "custom"}, "abc1234"); err != nil {
			t.Fatal(err)
		}
		cfgs, _ = svc.ListProviderConfigs(ctx, acme.ID)
		if len(cfgs) != 2 || cfgs[0].KeyLast4 != "" || cfgs[1].Name != "short" || cfgs[1].KeyLast4 != "" || cfgs[1].SealedAPIKey == nil {
			t.Errorf("configs = %+v: want openai without a key, short sealed without last four", cfgs)
		}

		err = svc.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: "x", Kind: "bedrock"}, "")
		if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), `"bedrock"`) || !strings.Contains(err.Error(), "custom, mock, openai") {
			t.Errorf("unknown kind: %v, want ErrInvalidInput naming it and the known kinds", err)
		}
		if err := svc.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: "x", Kind: "mock"}, "sk-\x00bad-key-bytes"); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("key with NUL: %v, want ErrInvalidInput", err)
		}
		if err := svc.PutProviderConfig(ctx, ProviderConfig{TenantID: "nobody", Name: "x", Kind: "mock"}, "sk-long-enough-key"); !errors.Is(err, ErrNotFound) {
			t.Errorf("config of a missing tenant: %v, want ErrNotFound", err)
		}

		if err := svc.DeleteProviderConfig(ctx, acme.ID, "short"); err != nil {
			t.Fatal(err)
		}
		if err := svc.DeleteProviderConfig(ctx, acme.ID, "short"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second delete: %v, want ErrNotFound", err)
		}
		if err := svc.DeleteProviderConfig(ctx, acme.ID, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete of a missing config: %v, want ErrNotFound", err)
		}
		if cfgs, _ := svc.ListProviderConfigs(ctx, globex.ID); len(cfgs) != 1 {
			t.Errorf("globex's configs after acme's deletes: %+v", cfgs)
		}
		want := []string{acme.ID, globex.ID, acme.ID, acme.ID, acme.ID}
		if diff := cmp.Diff(want, changed); diff != "" {
			t.Errorf("providers-changed calls, one per successful write (-want +got):\n%s", diff)
		}

		noSealer := NewService(s, nil)
		if err := noSealer.PutProviderConfig(ctx, ProviderConfig{TenantID: acme.ID, Name: "y", Kind: "mock"}, "sk-long-enough-key"); err == nil {
			t.Error("a key was put without a sealer")
		}
	})
}

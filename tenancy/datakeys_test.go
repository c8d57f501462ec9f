package tenancy

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"

	loomcrypto "github.com/loom-gateway/loom/crypto"
)

// dataKeyStore is what both stores offer for data keys and hard deletes.
type dataKeyStore interface {
	Store
	loomcrypto.DataKeyRewrapper
	TenantDeleter
}

func TestDataKeysSQLite(t *testing.T) { testDataKeys(t, newSQLiteStore(t)) }

func TestDataKeysPostgres(t *testing.T) { testDataKeys(t, newPostgresStore(t)) }

func specKeyring(t *testing.T, spec string) *loomcrypto.Keyring {
	t.Helper()
	k, err := loomcrypto.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const (
	master1 = "1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
	master2 = "2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
)

func testDataKeys(t *testing.T, s dataKeyStore) {
	ctx := context.Background()
	svc := NewService(s, nil)
	ta, err := svc.CreateTenant(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := svc.CreateTenant(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := s.DataKey(ctx, ta.ID, loomcrypto.FirstDataKeyVersion); !errors.Is(err, loomcrypto.ErrDataKeyNotFound) {
		t.Fatalf("DataKey before any seal: %v, want ErrDataKeyNotFound", err)
	}
	first := loomcrypto.WrappedDataKey{TenantID: ta.ID, Version: loomcrypto.FirstDataKeyVersion, MasterVersion: 1,
		Wrapped: bytes.Repeat([]byte{1}, loomcrypto.WrappedDataKeySize), CreatedAt: at(1)}
	got, err := s.CreateDataKey(ctx, first)
	if err != nil || !bytes.Equal(got.Wrapped, first.Wrapped) || got.MasterVersion != 1 || got.Destroyed() || !got.CreatedAt.Equal(micro(at(1))) {
		t.Fatalf("CreateDataKey: %+v, %v", got, err)
	}
	second := first
	second.Wrapped = bytes.Repeat([]byte{2}, loomcrypto.WrappedDataKeySize)
	if got, err := s.CreateDataKey(ctx, second); err != nil || !bytes.Equal(got.Wrapped, first.Wrapped) {
		t.Fatalf("second CreateDataKey returned %x, %v; want the first key back", got.Wrapped, err)
	}

	// Seals through a keyring over the store, from two "processes" at once.
	k1 := specKeyring(t, master1).WithDataKeys(s)
	var wg sync.WaitGroup
	sealed := make([][]byte, 4)
	for i := range sealed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := specKeyring(t, master1).WithDataKeys(s)
			var err error
			sealed[i], _, err = k.Seal(tb.ID, "r", []byte("b's body"))
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, b := range sealed {
		if got, err := k1.Open(tb.ID, "r", loomcrypto.FirstDataKeyVersion, b); err != nil || string(got) != "b's body" {
			t.Fatalf("seal %d: %q, %v", i, got, err)
		}
	}

	// Listing pages in (tenant, version) order, live keys only.
	all, err := s.ListDataKeys(ctx, "", 0, 10)
	if err != nil || len(all) != 2 {
		t.Fatalf("ListDataKeys: %d keys, %v; want 2", len(all), err)
	}
	page, err := s.ListDataKeys(ctx, all[0].TenantID, all[0].Version, 10)
	if err != nil || len(page) != 1 || page[0].TenantID != all[1].TenantID {
		t.Fatalf("ListDataKeys after the first: %+v, %v", page, err)
	}

	// Rotation: rewrap under master 2, then a keyring without master 1 still opens.
	k12 := specKeyring(t, master2+","+master1).WithDataKeys(s)
	if _, err := s.RewrapDataKey(ctx, first, 7); err != nil {
		t.Fatal(err)
	}
	// tenant a's row holds a planted, unwrappable key: remove it from the rotation first.
	if err := s.DestroyDataKeys(ctx, ta.ID, at(2)); err != nil {
		t.Fatal(err)
	}
	st, err := k12.RewrapDataKeys(ctx, s)
	if err != nil || st != (loomcrypto.RewrapStats{Rewrapped: 1}) {
		t.Fatalf("RewrapDataKeys: %+v, %v", st, err)
	}
	k2 := specKeyring(t, master2).WithDataKeys(s)
	for i, b := range sealed {
		if got, err := k2.Open(tb.ID, "r", loomcrypto.FirstDataKeyVersion, b); err != nil || string(got) != "b's body" {
			t.Fatalf("seal %d after rotation: %q, %v", i, got, err)
		}
	}
	if ok, err := s.RewrapDataKey(ctx, loomcrypto.WrappedDataKey{TenantID: tb.ID, Version: loomcrypto.FirstDataKeyVersion,
		MasterVersion: 9, Wrapped: []byte("x")}, 1); err != nil || ok {
		t.Fatalf("RewrapDataKey from a stale master version: %v, %v; want false", ok, err)
	}

	// Destroyed: a tombstone, no key bytes, and no new key for the tenant.
	row, err := s.DataKey(ctx, ta.ID, loomcrypto.FirstDataKeyVersion)
	if err != nil || !row.Destroyed() || row.Wrapped != nil || row.MasterVersion != 0 || !row.DestroyedAt.Equal(micro(at(2))) {
		t.Fatalf("destroyed row: %+v, %v", row, err)
	}
	if got, err := s.CreateDataKey(ctx, second); err != nil || !got.Destroyed() {
		t.Fatalf("CreateDataKey after destroy: %+v, %v; want the tombstone", got, err)
	}
	if _, _, err := k2.Seal(ta.ID, "r", []byte("x")); !errors.Is(err, loomcrypto.ErrDataKeyDestroyed) {
		t.Fatalf("seal for a destroyed tenant: %v, want ErrDataKeyDestroyed", err)
	}
	if err := s.DestroyDataKeys(ctx, "no-such-tenant", at(3)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DestroyDataKeys of an unknown tenant: %v, want ErrNotFound", err)
	}
	if _, err := s.DataKey(ctx, "no-such-tenant", loomcrypto.FirstDataKeyVersion); !errors.Is(err, loomcrypto.ErrDataKeyNotFound) {
		t.Fatalf("an unknown tenant's destroy left a row: %v", err)
	}
}

func TestDeleteTenantSQLite(t *testing.T) { testDeleteTenant(t, newSQLiteStore(t)) }

func TestDeleteTenantPostgres(t *testing.T) { testDeleteTenant(t, newPostgresStore(t)) }

func testDeleteTenant(t *testing.T, s dataKeyStore) {
	ctx := context.Background()
	auth := NewAuthenticator(s, AuthOptions{})
	var forgotten []string
	svc := NewService(s, auth, WithTenantDeleted(func(id string) { forgotten = append(forgotten, id) }))
	gone, err := svc.CreateTenant(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	kept, err := svc.CreateTenant(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	rawGone, _, err := svc.CreateKey(ctx, gone.ID, "k")
	if err != nil {
		t.Fatal(err)
	}
	rawKept, _, err := svc.CreateKey(ctx, kept.ID, "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{gone.ID, kept.ID} {
		if err := s.PutProviderConfig(ctx, ProviderConfig{TenantID: id, Name: "openai", Kind: "openai"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := auth.Authenticate(ctx, rawGone); err != nil {
		t.Fatal(err) // now cached
	}

	if err := svc.DeleteTenant(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if len(forgotten) == 0 || forgotten[0] != gone.ID {
		t.Fatalf("WithTenantDeleted hook called with %v", forgotten)
	}
	if _, err := auth.Authenticate(ctx, rawGone); err == nil {
		t.Fatal("the deleted tenant's key still authenticates")
	}
	if _, err := s.GetTenant(ctx, gone.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTenant after delete: %v", err)
	}
	if ks, err := s.ListKeys(ctx, gone.ID); err != nil || len(ks) != 0 {
		t.Fatalf("keys left: %v, %v", ks, err)
	}
	if cs, err := s.ListProviderConfigs(ctx, gone.ID); err != nil || len(cs) != 0 {
		t.Fatalf("provider configs left: %v, %v", cs, err)
	}
	if row, err := s.DataKey(ctx, gone.ID, loomcrypto.FirstDataKeyVersion); err != nil || !row.Destroyed() {
		t.Fatalf("no tombstone: %+v, %v", row, err)
	}
	if err := svc.DeleteTenant(ctx, gone.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	// The other tenant is untouched.
	if _, err := auth.Authenticate(ctx, rawKept); err != nil {
		t.Fatalf("the other tenant's key: %v", err)
	}
	if cs, err := s.ListProviderConfigs(ctx, kept.ID); err != nil || len(cs) != 1 {
		t.Fatalf("the other tenant's provider configs: %v, %v", cs, err)
	}
}

// A failing delete step rolls the rows back but leaves the keys destroyed; a second call
// finishes the job.
func TestDeleteTenantStepFailsSQLite(t *testing.T) {
	ctx := context.Background()
	fail := true
	base := newSQLiteStore(t)
	s := base.WithDeleteSteps(func(ctx context.Context, _ *sql.Tx, _ string) error {
		if fail {
			return errors.New("trace store down")
		}
		return nil
	})
	svc := NewService(s, nil)
	tn, err := svc.CreateTenant(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteTenant(ctx, tn.ID); err == nil {
		t.Fatal("DeleteTenant with a failing step succeeded")
	}
	if row, err := s.DataKey(ctx, tn.ID, loomcrypto.FirstDataKeyVersion); err != nil || !row.Destroyed() {
		t.Fatalf("keys not destroyed after a failed second step: %+v, %v", row, err)
	}
	if _, err := s.GetTenant(ctx, tn.ID); err != nil {
		t.Fatalf("the tenant row went despite the failed step: %v", err)
	}
	fail = false
	if err := svc.DeleteTenant(ctx, tn.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTenant(ctx, tn.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTenant after the retry: %v", err)
	}
	if base.deleteSteps != nil {
		t.Fatal("WithDeleteSteps changed the store it was called on")
	}
}

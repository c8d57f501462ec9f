package crypto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memKeys is a DataKeyRewrapper in memory, counting its reads. The tenancy stores are
// tested against PostgreSQL and SQLite in package tenancy.
type memKeys struct {
	mu    sync.Mutex
	rows  map[string]WrappedDataKey // tenant + "/" + version
	reads atomic.Int64
}

func newMemKeys() *memKeys { return &memKeys{rows: map[string]WrappedDataKey{}} }

func memID(tenant string, v int) string { return fmt.Sprintf("%s/%d", tenant, v) }

func (m *memKeys) DataKey(_ context.Context, tenant string, v int) (WrappedDataKey, error) {
	m.reads.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[memID(tenant, v)]
	if !ok {
		return r, fmt.Errorf("mem: %w", ErrDataKeyNotFound)
	}
	r.Wrapped = slices.Clone(r.Wrapped)
	return r, nil
}

func (m *memKeys) CreateDataKey(ctx context.Context, k WrappedDataKey) (WrappedDataKey, error) {
	m.mu.Lock()
	if _, ok := m.rows[memID(k.TenantID, k.Version)]; !ok {
		m.rows[memID(k.TenantID, k.Version)] = k
	}
	m.mu.Unlock()
	return m.DataKey(ctx, k.TenantID, k.Version)
}

func (m *memKeys) ListDataKeys(_ context.Context, afterTenant string, afterVersion, limit int) ([]WrappedDataKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []WrappedDataKey
	for _, r := range m.rows {
		if r.Destroyed() || r.TenantID < afterTenant || r.TenantID == afterTenant && r.Version <= afterVersion {
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b WrappedDataKey) int {
		if c := strings.Compare(a.TenantID, b.TenantID); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
	return out[:min(limit, len(out))], nil
}

func (m *memKeys) RewrapDataKey(_ context.Context, k WrappedDataKey, from int) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[memID(k.TenantID, k.Version)]
	if !ok || r.Destroyed() || r.MasterVersion != from {
		return false, nil
	}
	r.Wrapped, r.MasterVersion = k.Wrapped, k.MasterVersion
	m.rows[memID(k.TenantID, k.Version)] = r
	return true, nil
}

// destroy does what a hard delete does to the tenant's rows.
func (m *memKeys) destroy(tenant string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for id, r := range m.rows {
		if r.TenantID == tenant {
			r.Wrapped, r.MasterVersion, r.DestroyedAt = nil, 0, &now
			m.rows[id] = r
		}
	}
	if _, ok := m.rows[memID(tenant, FirstDataKeyVersion)]; !ok {
		m.rows[memID(tenant, FirstDataKeyVersion)] = WrappedDataKey{TenantID: tenant, Version: FirstDataKeyVersion, DestroyedAt: &now}
	}
}

func TestEnvelopeSealOpen(t *testing.T) {
	store := newMemKeys()
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)}).WithDataKeys(store)
	sealed, v, err := k.Seal("tenant-a", "trace-1/request", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if v != FirstDataKeyVersion {
		t.Fatalf("version = %d, want %d", v, FirstDataKeyVersion)
	}
	row, err := store.DataKey(context.Background(), "tenant-a", v)
	if err != nil {
		t.Fatal(err)
	}
	if row.MasterVersion != 1 || len(row.Wrapped) != WrappedDataKeySize {
		t.Fatalf("stored row: master version %d, %d wrapped bytes", row.MasterVersion, len(row.Wrapped))
	}
	// The key is random, not derived: the derived key does not open the row.
	plain := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	if _, err := plain.Open("tenant-a", "trace-1/request", 1, sealed); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("open with the derived key: %v, want ErrDecrypt", err)
	}
	// Another process over the same store opens it, and its seals use the same key.
	other := mustKeyring(t, 1, map[int][]byte{1: testKey(1)}).WithDataKeys(store)
	got, err := other.Open("tenant-a", "trace-1/request", v, sealed)
	if err != nil || string(got) != "hello" {
		t.Fatalf("open in another keyring: %q, %v", got, err)
	}
	if _, err := other.Open("tenant-a", "trace-1/response", v, sealed); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("open under another record id: %v, want ErrDecrypt", err)
	}
	if _, err := other.Open("tenant-b", "trace-1/request", v, sealed); err == nil {
		t.Fatal("tenant-b opened tenant-a's row")
	}
	// Without a data key store an envelope row is an unknown version.
	if _, err := plain.Open("tenant-a", "trace-1/request", v, sealed); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("open without a store: %v, want ErrUnknownVersion", err)
	}
}

func TestEnvelopeCachedNoStoreReads(t *testing.T) {
	store := newMemKeys()
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)}).WithDataKeys(store)
	sealed, v, err := k.Seal("tenant-a", "r", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	before := store.reads.Load()
	for range 100 {
		if _, _, err := k.Seal("tenant-a", "r", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Open("tenant-a", "r", v, sealed); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.reads.Load() - before; n != 0 {
		t.Fatalf("%d store reads for 200 cached seals and opens, want 0", n)
	}
}

func TestEnvelopeOldRowsOpen(t *testing.T) {
	old := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	sealed, v, err := old.Seal("tenant-a", "r", []byte("before"))
	if err != nil || v != 1 {
		t.Fatalf("seal: v=%d %v", v, err)
	}
	store := newMemKeys()
	k := old.WithDataKeys(store)
	got, err := k.Open("tenant-a", "r", v, sealed)
	if err != nil || string(got) != "before" {
		t.Fatalf("open an old row: %q, %v", got, err)
	}
	if store.reads.Load() != 0 {
		t.Fatal("an old row read the data key store")
	}
}

func TestEnvelopeConcurrentFirstSeal(t *testing.T) {
	store := newMemKeys()
	rings := make([]*Keyring, 8)
	for i := range rings {
		rings[i] = mustKeyring(t, 1, map[int][]byte{1: testKey(1)}).WithDataKeys(store)
	}
	sealed := make([][]byte, len(rings))
	var wg sync.WaitGroup
	for i, k := range rings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _, err := k.Seal("tenant-a", "r", []byte("same"))
			if err != nil {
				t.Error(err)
			}
			sealed[i] = s
		}()
	}
	wg.Wait()
	for i, s := range sealed {
		for j, k := range rings {
			if _, err := k.Open("tenant-a", "r", FirstDataKeyVersion, s); err != nil {
				t.Fatalf("keyring %d cannot open keyring %d's seal: %v", j, i, err)
			}
		}
	}
}

func TestEnvelopeDestroyAndForget(t *testing.T) {
	store := newMemKeys()
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)}).WithDataKeys(store)
	a, v, err := k.Seal("tenant-a", "r", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := k.Seal("tenant-b", "r", []byte("other"))
	if err != nil {
		t.Fatal(err)
	}
	store.destroy("tenant-a")
	// Until Forget the cached key still works: that is what Forget is for.
	if _, err := k.Open("tenant-a", "r", v, a); err != nil {
		t.Fatalf("cached key before Forget: %v", err)
	}
	k.Forget("tenant-a")
	if _, err := k.Open("tenant-a", "r", v, a); !errors.Is(err, ErrDataKeyDestroyed) {
		t.Fatalf("open after destroy: %v, want ErrDataKeyDestroyed", err)
	}
	if _, _, err := k.Seal("tenant-a", "r", []byte("more")); !errors.Is(err, ErrDataKeyDestroyed) {
		t.Fatalf("seal after destroy: %v, want ErrDataKeyDestroyed", err)
	}
	// A fresh process cannot either, and no new key was created for the tenant.
	fresh := mustKeyring(t, 1, map[int][]byte{1: testKey(1)}).WithDataKeys(store)
	if _, err := fresh.Open("tenant-a", "r", v, a); !errors.Is(err, ErrDataKeyDestroyed) {
		t.Fatalf("fresh keyring: %v, want ErrDataKeyDestroyed", err)
	}
	if got, err := fresh.Open("tenant-b", "r", v, b); err != nil || string(got) != "other" {
		t.Fatalf("tenant-b after tenant-a's delete: %q, %v", got, err)
	}
}

func TestWrappedKeyBoundToTenant(t *testing.T) {
	store := newMemKeys()
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)}).WithDataKeys(store)
	if _, _, err := k.Seal("tenant-a", "r", []byte("x")); err != nil {
		t.Fatal(err)
	}
	a, _ := store.DataKey(context.Background(), "tenant-a", FirstDataKeyVersion)
	a.TenantID = "tenant-b" // tenant-a's wrapped key planted in tenant-b's row
	store.rows[memID("tenant-b", FirstDataKeyVersion)] = a
	if _, _, err := k.Seal("tenant-b", "r", []byte("x")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("seal with a moved wrapped key: %v, want ErrDecrypt", err)
	}
}

func TestRewrapThenRemoveOldMaster(t *testing.T) {
	ctx := context.Background()
	store := newMemKeys()
	v1 := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	legacy, lv, err := v1.Seal("tenant-a", "old", []byte("derived era"))
	if err != nil {
		t.Fatal(err)
	}
	env1 := v1.WithDataKeys(store)
	tenants := []string{"tenant-a", "tenant-b", "tenant-c"}
	sealed := map[string][]byte{}
	for _, tn := range tenants {
		if sealed[tn], _, err = env1.Seal(tn, "r", []byte("body of "+tn)); err != nil {
			t.Fatal(err)
		}
	}
	both := mustKeyring(t, 2, map[int][]byte{1: testKey(1), 2: testKey(2)}).WithDataKeys(store)
	st, err := both.RewrapDataKeys(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if st != (RewrapStats{Rewrapped: 3}) {
		t.Fatalf("stats %+v, want 3 rewrapped", st)
	}
	if n, err := both.AdoptDerivedKeys(ctx, store, tenants); err != nil || n != 6 {
		t.Fatalf("adopt: %d, %v; want 6 (3 tenants x 2 versions)", n, err)
	}
	if st, err := both.RewrapDataKeys(ctx, store); err != nil || st != (RewrapStats{Current: 9}) {
		t.Fatalf("second rewrap: %+v, %v; want 9 current", st, err)
	}
	only2 := mustKeyring(t, 2, map[int][]byte{2: testKey(2)}).WithDataKeys(store)
	for _, tn := range tenants {
		got, err := only2.Open(tn, "r", FirstDataKeyVersion, sealed[tn])
		if err != nil || string(got) != "body of "+tn {
			t.Fatalf("%s after removing master 1: %q, %v", tn, got, err)
		}
	}
	got, err := only2.Open("tenant-a", "old", lv, legacy)
	if err != nil || string(got) != "derived era" {
		t.Fatalf("derived-era row after removing master 1: %q, %v", got, err)
	}
	// A keyring that lacks the wrapping version is told so.
	only3 := mustKeyring(t, 3, map[int][]byte{3: testKey(3)}).WithDataKeys(store)
	if _, err := only3.Open("tenant-a", "r", FirstDataKeyVersion, sealed["tenant-a"]); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("open with no wrapping version: %v, want ErrUnknownVersion", err)
	}
	if _, err := only3.RewrapDataKeys(ctx, store); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("rewrap without the wrapping version: %v, want ErrUnknownVersion", err)
	}
	// Destroying tenant-a shreds its derived-era row too, once master 1 is gone.
	store.destroy("tenant-a")
	only2.Forget("tenant-a")
	if _, err := only2.Open("tenant-a", "old", lv, legacy); !errors.Is(err, ErrDataKeyDestroyed) {
		t.Fatalf("derived-era row after destroy: %v, want ErrDataKeyDestroyed", err)
	}
}

func TestMasterVersionBelowDataKeyBase(t *testing.T) {
	if _, err := NewKeyring(DataKeyVersionBase, map[int][]byte{DataKeyVersionBase: testKey(1)}); err == nil {
		t.Fatal("a master version at DataKeyVersionBase was accepted")
	}
}

// BenchmarkSeal1KiBEnvelope is BenchmarkSeal1KiB with per-tenant data keys: the key is
// cached after the first seal, so the store is never read in the loop.
func BenchmarkSeal1KiBEnvelope(b *testing.B) {
	store := newMemKeys()
	k := benchKeyring(b).WithDataKeys(store)
	plaintext := bytes.Repeat([]byte("a"), 1024)
	if _, _, err := k.Seal("tenant-a", "warm", plaintext); err != nil {
		b.Fatal(err)
	}
	reads := store.reads.Load()
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := k.Seal("tenant-a", "0193a5e2-7c1d-7b3a-9f00-000000000001", plaintext); err != nil {
			b.Fatal(err)
		}
	}
	if store.reads.Load() != reads {
		b.Fatal("the data key store was read on the hot path")
	}
}

// BenchmarkSeal1KiBEnvelopeColdTenant is BenchmarkSeal1KiBColdTenant with data keys: every
// seal misses and reads (an in-memory) store and unwraps the key.
func BenchmarkSeal1KiBEnvelopeColdTenant(b *testing.B) {
	k0, err := NewKeyring(1, map[int][]byte{1: testKey(1)}, WithCacheSize(1))
	if err != nil {
		b.Fatal(err)
	}
	k := k0.WithDataKeys(newMemKeys())
	plaintext := bytes.Repeat([]byte("a"), 1024)
	tenants := []string{"tenant-a", "tenant-b"}
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, err := k.Seal(tenants[i%2], "r", plaintext); err != nil {
			b.Fatal(err)
		}
	}
}

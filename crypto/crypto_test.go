package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sealer mirrors tracing.Sealer, which this package must satisfy without importing tracing.
type sealer interface {
	Seal(tenantID, traceID string, plaintext []byte) (sealed []byte, keyVersion int, err error)
}

var _ sealer = (*Keyring)(nil)

// testKey returns a deterministic 32-byte master key whose bytes all equal b.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, MasterKeySize) }

func b64(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

func mustKeyring(t testing.TB, current int, masters map[int][]byte, opts ...Option) *Keyring {
	t.Helper()
	k, err := NewKeyring(current, masters, opts...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func TestParseMasterKey(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(250 - i) // includes bytes that encode to '+' '/' or '-' '_'
	}
	tests := []struct {
		name    string
		in      string
		want    []byte
		wantErr bool
	}{
		{name: "standard", in: base64.StdEncoding.EncodeToString(key), want: key},
		{name: "raw standard", in: base64.RawStdEncoding.EncodeToString(key), want: key},
		{name: "url", in: base64.URLEncoding.EncodeToString(key), want: key},
		{name: "raw url", in: base64.RawURLEncoding.EncodeToString(key), want: key},
		{name: "surrounding space", in: "  " + base64.StdEncoding.EncodeToString(key) + "\n", want: key},
		{name: "empty", in: "", wantErr: true},
		{name: "not base64", in: "this is not a key!", wantErr: true},
		{name: "16 bytes", in: base64.StdEncoding.EncodeToString(key[:16]), wantErr: true},
		{name: "33 bytes", in: base64.StdEncoding.EncodeToString(append(key, 0)), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMasterKey(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidMasterKey) {
					t.Fatalf("ParseMasterKey(%q) error = %v, want ErrInvalidMasterKey", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMasterKey: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseMasterKey (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGenerateMasterKey(t *testing.T) {
	a, err := GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	key, err := ParseMasterKey(a)
	if err != nil {
		t.Fatalf("generated key does not parse: %v", err)
	}
	if len(key) != MasterKeySize {
		t.Fatalf("generated key is %d bytes", len(key))
	}
}

func TestParseKeyring(t *testing.T) {
	k1, k2, k3 := b64(testKey(1)), b64(testKey(2)), b64(testKey(3))
	type result struct {
		Current  int
		Versions []int
	}
	tests := []struct {
		name    string
		spec    string
		want    result
		wantErr string
	}{
		{name: "single key", spec: k1, want: result{1, []int{1}}},
		{name: "single versioned key", spec: "7:" + k1, want: result{7, []int{7}}},
		{name: "rotation", spec: "2:" + k2 + ",1:" + k1, want: result{2, []int{1, 2}}},
		{name: "white space", spec: " 3 : " + k3 + " ,\n 1:" + k1 + "\n", want: result{3, []int{1, 3}}},
		{name: "current need not be highest", spec: "1:" + k1 + ",2:" + k2, want: result{1, []int{1, 2}}},
		{name: "empty", spec: "", wantErr: "entry 1"},
		{name: "duplicate version", spec: "1:" + k1 + ",1:" + k2, wantErr: "appears twice"},
		{name: "version zero", spec: "0:" + k1, wantErr: "version must be"},
		{name: "negative version", spec: "-1:" + k1, wantErr: "version must be"},
		{name: "version not a number", spec: "v2:" + k1, wantErr: "version must be"},
		{name: "unversioned in list", spec: k2 + ",1:" + k1, wantErr: "every entry must be VERSION:BASE64"},
		{name: "trailing comma", spec: "1:" + k1 + ",", wantErr: "entry 2"},
		{name: "short key", spec: "2:" + b64(testKey(2)[:31]) + ",1:" + k1, wantErr: "entry 1 (version 2)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKeyring(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseKeyring error = %v, want one containing %q", err, tt.wantErr)
				}
				for _, key := range []string{k1, k2, k3} {
					if strings.Contains(err.Error(), key) {
						t.Fatalf("error %q contains key material", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeyring: %v", err)
			}
			got := result{k.CurrentVersion(), k.Versions()}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseKeyring (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewKeyringErrors(t *testing.T) {
	tests := []struct {
		name    string
		current int
		masters map[int][]byte
	}{
		{name: "no keys", current: 1, masters: nil},
		{name: "current missing", current: 2, masters: map[int][]byte{1: testKey(1)}},
		{name: "version zero", current: 0, masters: map[int][]byte{0: testKey(1)}},
		{name: "short key", current: 1, masters: map[int][]byte{1: testKey(1)[:16]}},
		{name: "old key short", current: 2, masters: map[int][]byte{2: testKey(2), 1: nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, err := NewKeyring(tt.current, tt.masters); err == nil {
				t.Fatalf("NewKeyring = %v, want an error", k)
			}
		})
	}
}

func TestNewKeyringCopiesKeys(t *testing.T) {
	key := testKey(1)
	k := mustKeyring(t, 1, map[int][]byte{1: key})
	sealed, v, err := k.Seal("t", "r", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	key[0] ^= 0xff // the caller reuses its buffer
	k2 := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	if _, err := k2.Open("t", "r", v, sealed); err != nil {
		t.Fatalf("keyring changed with its caller's buffer: %v", err)
	}
}

func TestKeyringStringHidesKeys(t *testing.T) {
	key := testKey(0x41) // "AAAA…" in ASCII
	k := mustKeyring(t, 1, map[int][]byte{1: key})
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(format, k)
		if strings.Contains(out, string(key)) || strings.Contains(out, b64(key)) || strings.Contains(out, "65, 65") {
			t.Errorf("Sprintf(%q) = %q leaks the key", format, out)
		}
	}
	if diff := cmp.Diff("crypto.Keyring{current: 1, versions: [1]}", k.String()); diff != "" {
		t.Errorf("String (-want +got):\n%s", diff)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	tests := []struct {
		name      string
		tenant    string
		record    string
		plaintext []byte
	}{
		{name: "trace body", tenant: "tenant-a", record: "0193a5e2-7c1d-7b3a-9f00-000000000001", plaintext: []byte(`{"model":"gpt-4o","messages":[]}`)},
		{name: "provider key", tenant: "tenant-a", record: "provider:openai", plaintext: []byte("sk-secret")},
		{name: "empty plaintext", tenant: "tenant-b", record: "r", plaintext: []byte{}},
		{name: "empty ids", tenant: "", record: "", plaintext: []byte("x")},
		{name: "one MiB", tenant: "tenant-c", record: "big", plaintext: bytes.Repeat([]byte("loom"), 1<<18)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed, v, err := k.Seal(tt.tenant, tt.record, tt.plaintext)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if v != 1 {
				t.Errorf("Seal version = %d, want 1", v)
			}
			if got, want := len(sealed), nonceSize+len(tt.plaintext)+tagSize; got != want {
				t.Errorf("len(sealed) = %d, want %d", got, want)
			}
			if cap(sealed) != len(sealed) {
				t.Errorf("cap(sealed) = %d, want %d: appending must not overwrite hidden bytes", cap(sealed), len(sealed))
			}
			got, err := k.Open(tt.tenant, tt.record, v, sealed)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open = %q, want %q", truncate(got), truncate(tt.plaintext))
			}
		})
	}
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestOpenFailures(t *testing.T) {
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	const tenant, record = "tenant-a", "trace-1"
	sealed, v, err := k.Seal(tenant, record, []byte("the request body"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	// ("ab", "c") and ("a", "bc") must not share additional data.
	split, _, err := k.Seal("ab", "c", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tenant  string
		record  string
		version int
		sealed  []byte
		want    error
	}{
		{name: "nonce tampered", tenant: tenant, record: record, version: v, sealed: flip(0), want: ErrDecrypt},
		{name: "ciphertext tampered", tenant: tenant, record: record, version: v, sealed: flip(nonceSize + 3), want: ErrDecrypt},
		{name: "tag tampered", tenant: tenant, record: record, version: v, sealed: flip(len(sealed) - 1), want: ErrDecrypt},
		{name: "truncated", tenant: tenant, record: record, version: v, sealed: sealed[:len(sealed)-1], want: ErrDecrypt},
		{name: "shorter than nonce and tag", tenant: tenant, record: record, version: v, sealed: sealed[:nonceSize+tagSize-1], want: ErrDecrypt},
		{name: "empty", tenant: tenant, record: record, version: v, sealed: nil, want: ErrDecrypt},
		{name: "extended", tenant: tenant, record: record, version: v, sealed: append(bytes.Clone(sealed), 0), want: ErrDecrypt},
		{name: "other tenant", tenant: "tenant-b", record: record, version: v, sealed: sealed, want: ErrDecrypt},
		{name: "other record", tenant: tenant, record: "trace-2", version: v, sealed: sealed, want: ErrDecrypt},
		{name: "ids swapped", tenant: record, record: tenant, version: v, sealed: sealed, want: ErrDecrypt},
		{name: "boundary moved", tenant: "a", record: "bc", version: 1, sealed: split, want: ErrDecrypt},
		{name: "unknown version", tenant: tenant, record: record, version: 2, sealed: sealed, want: ErrUnknownVersion},
		{name: "version zero", tenant: tenant, record: record, version: 0, sealed: sealed, want: ErrUnknownVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.Open(tt.tenant, tt.record, tt.version, tt.sealed)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open = %q, %v; want error %v", got, err, tt.want)
			}
			if got != nil {
				t.Errorf("Open returned %q with an error", got)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	const tenant, record = "tenant-a", "trace-old"
	old := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	oldRow, oldVersion, err := old.Seal(tenant, record, []byte("sealed before the rotation"))
	if err != nil {
		t.Fatal(err)
	}
	if oldVersion != 1 {
		t.Fatalf("old version = %d, want 1", oldVersion)
	}

	// The operator puts version 2 in front and keeps version 1.
	rotated, err := ParseKeyring("2:" + b64(testKey(2)) + ",1:" + b64(testKey(1)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := rotated.Open(tenant, record, oldVersion, oldRow)
	if err != nil {
		t.Fatalf("rotated keyring cannot open an old row: %v", err)
	}
	if diff := cmp.Diff("sealed before the rotation", string(got)); diff != "" {
		t.Errorf("old row (-want +got):\n%s", diff)
	}

	newRow, newVersion, err := rotated.Seal(tenant, "trace-new", []byte("sealed after"))
	if err != nil {
		t.Fatal(err)
	}
	if newVersion != 2 {
		t.Fatalf("new seals use version %d, want 2", newVersion)
	}
	if _, err := old.Open(tenant, "trace-new", newVersion, newRow); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("old keyring opening a v2 row: err = %v, want ErrUnknownVersion", err)
	}
	// Opening a v2 row claiming v1 must fail: the version picks the key.
	if _, err := rotated.Open(tenant, "trace-new", 1, newRow); !errors.Is(err, ErrDecrypt) {
		t.Errorf("v2 row opened as v1: err = %v, want ErrDecrypt", err)
	}

	// Once version 1 is dropped, its rows no longer open.
	only2 := mustKeyring(t, 2, map[int][]byte{2: testKey(2)})
	if _, err := only2.Open(tenant, record, oldVersion, oldRow); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("keyring without v1: err = %v, want ErrUnknownVersion", err)
	}
	if _, err := only2.Open(tenant, "trace-new", newVersion, newRow); err != nil {
		t.Errorf("keyring with v2 only cannot open a v2 row: %v", err)
	}
}

func TestSealRandomNonceAndNoPlaintext(t *testing.T) {
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	plaintext := []byte(`{"messages":[{"role":"user","content":"the secret plan"}]}`)
	a, _, err := k.Seal("tenant-a", "trace-1", plaintext)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := k.Seal("tenant-a", "trace-1", plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[:nonceSize], b[:nonceSize]) {
		t.Error("two seals used the same nonce")
	}
	if bytes.Equal(a, b) {
		t.Error("two seals of the same plaintext are equal")
	}
	for _, sealed := range [][]byte{a, b} {
		if bytes.Contains(sealed, []byte("secret plan")) || bytes.Contains(sealed, plaintext[:16]) {
			t.Error("sealed bytes contain the plaintext")
		}
	}
}

func TestSealTenantsUseDifferentKeys(t *testing.T) {
	k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)})
	a, err := k.aead(1, "tenant-a", false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.aead(1, "tenant-b", false)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, nonceSize)
	if bytes.Equal(a.Seal(nil, nonce, []byte("x"), nil), b.Seal(nil, nonce, []byte("x"), nil)) {
		t.Error("two tenants share a data key")
	}
}

// hkdfSHA256 is RFC 5869 written out with crypto/hmac, independent of the hkdf package.
func hkdfSHA256(secret, salt, info []byte, length int) []byte {
	if salt == nil {
		salt = make([]byte, sha256.Size)
	}
	extract := hmac.New(sha256.New, salt)
	extract.Write(secret)
	prk := extract.Sum(nil)
	var out, prev []byte
	for i := byte(1); len(out) < length; i++ {
		expand := hmac.New(sha256.New, prk)
		expand.Write(prev)
		expand.Write(info)
		expand.Write([]byte{i})
		prev = expand.Sum(nil)
		out = append(out, prev...)
	}
	return out[:length]
}

func TestDeriveTenantKey(t *testing.T) {
	master := make([]byte, 32)
	for i := range master {
		master[i] = byte(i) // base64 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
	}
	// Known answer, computed once with Python's hmac module:
	//   prk = HMAC-SHA256(key=32 zero bytes, msg=master)
	//   okm = HMAC-SHA256(key=prk, msg=b"loom/tenant-data-key/v1/tenant-a" + b"\x01")
	// If this changes, every sealed row in every deployment becomes unreadable.
	t.Run("known answer", func(t *testing.T) {
		got, err := deriveTenantKey(master, "tenant-a")
		if err != nil {
			t.Fatal(err)
		}
		want := "04cc331a1eb0bea3759ce835008f9f92af12e5d4f63bb74e02e3196ca280b1a9"
		if diff := cmp.Diff(want, hex.EncodeToString(got)); diff != "" {
			t.Errorf("deriveTenantKey (-want +got):\n%s", diff)
		}
	})
	for _, tenant := range []string{"", "tenant-a", "0193a5e2-7c1d-7b3a-9f00-000000000001", "ünïcode", strings.Repeat("x", 300)} {
		t.Run("independent hkdf/"+truncateString(tenant), func(t *testing.T) {
			got, err := deriveTenantKey(master, tenant)
			if err != nil {
				t.Fatal(err)
			}
			want := hkdfSHA256(master, nil, []byte("loom/tenant-data-key/v1/"+tenant), 32)
			if diff := cmp.Diff(hex.EncodeToString(want), hex.EncodeToString(got)); diff != "" {
				t.Errorf("deriveTenantKey (-want +got):\n%s", diff)
			}
		})
	}
}

func truncateString(s string) string {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

func TestAdditionalData(t *testing.T) {
	got := appendAdditionalData(nil, "ab", "c")
	want := append([]byte("loom/seal/v1"), 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 1, 'c')
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("appendAdditionalData (-want +got):\n%s", diff)
	}
	if n := additionalDataLen("ab", "c"); n != len(got) {
		t.Errorf("additionalDataLen = %d, want %d", n, len(got))
	}
}

func TestCacheBounded(t *testing.T) {
	for _, size := range []int{1, 100, 2048} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			k := mustKeyring(t, 1, map[int][]byte{1: testKey(1)}, WithCacheSize(size))
			for i := range 3 * size {
				tenant := "tenant-" + strconv.Itoa(i)
				sealed, v, err := k.Seal(tenant, "r", []byte("x"))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := k.Open(tenant, "r", v, sealed); err != nil {
					t.Fatal(err)
				}
			}
			if n := k.cache.len(); n > size || n == 0 {
				t.Errorf("cache holds %d ciphers, want 1..%d", n, size)
			}
			// An evicted tenant's key is derived again and still opens old rows.
			sealed, v, err := k.Seal("tenant-0", "r", []byte("again"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := k.Open("tenant-0", "r", v, sealed); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConcurrentSealOpen(t *testing.T) {
	k := mustKeyring(t, 2, map[int][]byte{1: testKey(1), 2: testKey(2)}, WithCacheSize(8))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				tenant := "tenant-" + strconv.Itoa((g+i)%20) // more tenants than cache slots
				record := strconv.Itoa(i)
				plaintext := []byte(tenant + "/" + record)
				sealed, v, err := k.Seal(tenant, record, plaintext)
				if err != nil {
					errs <- err
					return
				}
				got, err := k.Open(tenant, record, v, sealed)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, plaintext) {
					errs <- fmt.Errorf("Open = %q, want %q", got, plaintext)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func benchKeyring(b *testing.B) *Keyring {
	k, err := NewKeyring(1, map[int][]byte{1: testKey(1)})
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func BenchmarkSeal1KiB(b *testing.B) {
	k := benchKeyring(b)
	plaintext := bytes.Repeat([]byte("a"), 1024)
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := k.Seal("tenant-a", "0193a5e2-7c1d-7b3a-9f00-000000000001", plaintext); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiBParallel(b *testing.B) {
	k := benchKeyring(b)
	plaintext := bytes.Repeat([]byte("a"), 1024)
	tenants := make([]string, 64)
	for i := range tenants {
		tenants[i] = "tenant-" + strconv.Itoa(i)
	}
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if _, _, err := k.Seal(tenants[i%len(tenants)], "0193a5e2-7c1d-7b3a-9f00-000000000001", plaintext); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSeal1KiBColdTenant measures a cache miss: HKDF, AES key expansion and GCM set-up.
func BenchmarkSeal1KiBColdTenant(b *testing.B) {
	k, err := NewKeyring(1, map[int][]byte{1: testKey(1)}, WithCacheSize(1))
	if err != nil {
		b.Fatal(err)
	}
	plaintext := bytes.Repeat([]byte("a"), 1024)
	tenants := []string{"tenant-a", "tenant-b"} // alternate so every seal misses
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

func BenchmarkOpen1KiB(b *testing.B) {
	k := benchKeyring(b)
	sealed, v, err := k.Seal("tenant-a", "trace", bytes.Repeat([]byte("a"), 1024))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open("tenant-a", "trace", v, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

package tenancy

import (
	"encoding/hex"
	"regexp"
	"testing"
)

func TestGenerateKey(t *testing.T) {
	shape := regexp.MustCompile(`^loom_[0-9A-Za-z]{43}$`)
	seen := map[string]bool{}
	for range 200 {
		raw, prefix, hash, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if !shape.MatchString(raw) {
			t.Fatalf("raw key %q does not match %s", raw, shape)
		}
		if want := raw[:DisplayPrefixLen]; prefix != want {
			t.Errorf("prefix %q, want %q", prefix, want)
		}
		if hash != HashKey(raw) {
			t.Errorf("hash of %q is not HashKey(raw)", raw)
		}
		if !plausibleKey(raw) {
			t.Errorf("generated key %q is not plausible", raw)
		}
		if seen[raw] {
			t.Fatalf("key %q generated twice", raw)
		}
		seen[raw] = true
	}
}

func TestHashKey(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want string
	}{
		// FIPS 180-2 test vectors.
		{name: "abc", raw: "abc", want: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{name: "empty", raw: "", want: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := HashKey(tt.raw)
			if got := hex.EncodeToString(h[:]); got != tt.want {
				t.Errorf("HashKey(%q) = %s, want %s", tt.raw, got, tt.want)
			}
		})
	}
}

package ledger

import (
	"encoding/hex"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// rfc6962Leaves and rfc6962Roots are the RFC 6962 reference vectors (as used by Certificate
// Transparency's own tests): the root of the tree of the first n leaves is rfc6962Roots[n-1].
var rfc6962Leaves = []string{"", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"}

var rfc6962Roots = []string{
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

func vectorLeaves(t *testing.T) [][]byte {
	var hashes [][]byte
	for _, l := range rfc6962Leaves {
		b, err := hex.DecodeString(l)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, rfc6962.DefaultHasher.HashLeaf(b))
	}
	return hashes
}

func TestRootRFC6962Vectors(t *testing.T) {
	leaves := vectorLeaves(t)
	var got []string
	for n := 1; n <= len(leaves); n++ {
		root, err := rootOf(leaves[:n])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, hex.EncodeToString(root))
	}
	if diff := cmp.Diff(rfc6962Roots, got); diff != "" {
		t.Errorf("roots (-want +got):\n%s", diff)
	}
	empty, err := rootOf(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; hex.EncodeToString(empty) != want {
		t.Errorf("empty root %x, want %s", empty, want)
	}
}

// TestProofsVerify: every inclusion and consistency proof over the vectors checks with
// transparency-dev/merkle's own verifiers, and fails against another root.
func TestProofsVerify(t *testing.T) {
	leaves := vectorLeaves(t)
	roots := make([][]byte, len(leaves)+1)
	for n := range roots {
		roots[n], _ = rootOf(leaves[:n])
	}
	for size := uint64(1); size <= uint64(len(leaves)); size++ {
		for i := uint64(0); i < size; i++ {
			p, err := InclusionProof(leaves, i, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, size, leaves[i], p, roots[size]); err != nil {
				t.Errorf("inclusion %d in %d: %v", i, size, err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, size, leaves[(i+1)%size], p, roots[size]); err == nil && size > 1 {
				t.Errorf("inclusion %d in %d verified for another leaf", i, size)
			}
		}
		for s1 := uint64(1); s1 <= size; s1++ {
			p, err := ConsistencyProof(leaves, s1, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, s1, size, p, roots[s1], roots[size]); err != nil {
				t.Errorf("consistency %d to %d: %v", s1, size, err)
			}
		}
	}
}

// TestVerifierKey: the public key derived from a signing key is the one generated with it
// (for many keys: the base64 key data often holds '+', the field separator).
func TestVerifierKey(t *testing.T) {
	for range 50 {
		skey, vkey, err := GenerateKey("loom-ledger")
		if err != nil {
			t.Fatal(err)
		}
		got, err := VerifierKey(skey)
		if err != nil {
			t.Fatal(err)
		}
		if got != vkey {
			t.Fatalf("VerifierKey = %q, want %q", got, vkey)
		}
	}
}

package ledger

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// rootOf is the RFC 6962 root of the leaf hashes (the empty tree's root for none).
func rootOf(leaves [][]byte) ([]byte, error) {
	r := rangeFactory.NewEmptyRange(0)
	for _, h := range leaves {
		if err := r.Append(h, nil); err != nil {
			return nil, err
		}
	}
	return rangeRoot(r)
}

func rangeRoot(r *compact.Range) ([]byte, error) {
	if r.End() == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	return r.GetRootHash(nil)
}

// subtree is the hash of the perfect subtree node id, from the leaf hashes.
func subtree(leaves [][]byte, id compact.NodeID) ([]byte, error) {
	begin, end := id.Coverage()
	if end > uint64(len(leaves)) {
		return nil, fmt.Errorf("node %v beyond %d leaves", id, len(leaves))
	}
	r := rangeFactory.NewEmptyRange(begin)
	for _, h := range leaves[begin:end] {
		if err := r.Append(h, nil); err != nil {
			return nil, err
		}
	}
	return r.Hashes()[0], nil
}

func rehash(leaves [][]byte, nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := subtree(leaves, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}

// InclusionProof is the RFC 6962 inclusion proof of leaf index in the tree of the first
// size leaves; it checks with proof.VerifyInclusion.
func InclusionProof(leaves [][]byte, index, size uint64) ([][]byte, error) {
	if size > uint64(len(leaves)) {
		return nil, fmt.Errorf("ledger: tree size %d beyond %d leaves", size, len(leaves))
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return rehash(leaves, nodes)
}

// ConsistencyProof is the RFC 6962 proof that the tree of size2 leaves extends the tree of
// size1; it checks with proof.VerifyConsistency.
func ConsistencyProof(leaves [][]byte, size1, size2 uint64) ([][]byte, error) {
	if size2 > uint64(len(leaves)) {
		return nil, fmt.Errorf("ledger: tree size %d beyond %d leaves", size2, len(leaves))
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return rehash(leaves, nodes)
}

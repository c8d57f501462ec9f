package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Inclusion proves that one trace's leaf is in a log at an exported checkpoint. A third
// party checks it with transparency-dev/merkle alone: note.Open the Checkpoint with the
// pinned key, then proof.VerifyInclusion(rfc6962.DefaultHasher, LeafIndex, TreeSize,
// LeafHash, Proof, Root) (and LeafHash is rfc6962 HashLeaf of the trace's Leaf encoding:
// Leaf.Encode for a trace appended since leaf version 2, EncodeVersion(LeafVersion1) before).
// Byte fields are base64 in JSON.
type Inclusion struct {
	Origin     string   `json:"origin"`
	TraceID    string   `json:"trace_id"`
	LeafIndex  uint64   `json:"leaf_index"`
	TreeSize   uint64   `json:"tree_size"`
	LeafHash   []byte   `json:"leaf_hash"`
	Root       []byte   `json:"root"`
	Proof      [][]byte `json:"proof"`
	Checkpoint string   `json:"checkpoint"` // the signed note
}

// Consistency proves that a log at Size2 extends the log at Size1, both exported
// checkpoints: proof.VerifyConsistency(rfc6962.DefaultHasher, Size1, Size2, Proof, Root1,
// Root2).
type Consistency struct {
	Origin      string   `json:"origin"`
	Size1       uint64   `json:"size1"`
	Size2       uint64   `json:"size2"`
	Root1       []byte   `json:"root1"`
	Root2       []byte   `json:"root2"`
	Proof       [][]byte `json:"proof"`
	Checkpoint1 string   `json:"checkpoint1"`
	Checkpoint2 string   `json:"checkpoint2"`
}

// ErrUnanchored is returned for a trace no exported checkpoint covers yet.
var ErrUnanchored = errors.New("ledger: the trace is after the last exported checkpoint of its log")

// ProveTrace is the inclusion proof of trace id at the largest exported checkpoint of its
// log (o.Checkpoints, checked against o.Verifier).
func ProveTrace(ctx context.Context, o VerifyOptions, id string) (*Inclusion, error) {
	q := "SELECT tenant_id, month, leaf_index, leaf_hash FROM ledger_leaves WHERE trace_id = ?"
	if o.Dialect == Postgres {
		q = "SELECT tenant_id, month, leaf_index, leaf_hash FROM ledger_leaves WHERE trace_id = $1::uuid"
	}
	var tenant, month string
	var index int64
	var leafHash []byte
	if err := o.DB.QueryRowContext(ctx, q, id).Scan(&tenant, &month, &index, &leafHash); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("ledger: trace %s has no leaf", id)
		}
		return nil, fmt.Errorf("ledger: prove: %w", err)
	}
	prefix := cmp.Or(o.Prefix, DefaultPrefix)
	cps, _, _ := openCheckpoints(o.Checkpoints, o.Verifier, prefix)
	var best *signedCheckpoint
	for i, cp := range cps[[2]string{tenant, month}] {
		if cp.size > uint64(index) && (best == nil || cp.size > best.size) {
			best = &cps[[2]string{tenant, month}][i]
		}
	}
	if best == nil {
		return nil, ErrUnanchored
	}
	leaves, err := logLeaves(ctx, o, tenant, month)
	if err != nil {
		return nil, err
	}
	p, err := InclusionProof(leaves, uint64(index), best.size)
	if err != nil {
		return nil, err
	}
	return &Inclusion{Origin: Origin(prefix, tenant, month), TraceID: id, LeafIndex: uint64(index), TreeSize: best.size,
		LeafHash: leafHash, Root: best.root, Proof: p, Checkpoint: string(best.note)}, nil
}

// ProveConsistency is the consistency proof between the exported checkpoints of the log
// origin (a tenant log's, or RootOrigin for the root log) at size1 and size2.
func ProveConsistency(ctx context.Context, o VerifyOptions, origin string, size1, size2 uint64) (*Consistency, error) {
	prefix := cmp.Or(o.Prefix, DefaultPrefix)
	cps, rootCps, _ := openCheckpoints(o.Checkpoints, o.Verifier, prefix)
	var list []signedCheckpoint
	var leaves func() ([][]byte, error)
	if origin == RootOrigin(prefix) {
		list = rootCps
		leaves = func() ([][]byte, error) { return rootLeaves(ctx, o) }
	} else {
		tenant, month, err := parseOrigin(prefix, origin)
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		list = cps[[2]string{tenant, month}]
		leaves = func() ([][]byte, error) { return logLeaves(ctx, o, tenant, month) }
	}
	find := func(size uint64) (*signedCheckpoint, error) {
		for _, cp := range list {
			if cp.size == size {
				return &cp, nil
			}
		}
		return nil, fmt.Errorf("ledger: no exported checkpoint of %s at size %d", origin, size)
	}
	c1, err := find(size1)
	if err != nil {
		return nil, err
	}
	c2, err := find(size2)
	if err != nil {
		return nil, err
	}
	hashes, err := leaves()
	if err != nil {
		return nil, err
	}
	p, err := ConsistencyProof(hashes, size1, size2)
	if err != nil {
		return nil, err
	}
	return &Consistency{Origin: origin, Size1: size1, Size2: size2, Root1: c1.root, Root2: c2.root, Proof: p,
		Checkpoint1: string(c1.note), Checkpoint2: string(c2.note)}, nil
}

// logLeaves are the stored leaf hashes of one log in index order.
func logLeaves(ctx context.Context, o VerifyOptions, tenant, month string) ([][]byte, error) {
	q := "SELECT leaf_hash FROM ledger_leaves WHERE tenant_id = ? AND month = ? ORDER BY leaf_index"
	if o.Dialect == Postgres {
		q = "SELECT leaf_hash FROM ledger_leaves WHERE tenant_id = $1 AND month = $2 ORDER BY leaf_index"
	}
	rows, err := o.DB.QueryContext(ctx, q, tenant, month)
	if err != nil {
		return nil, fmt.Errorf("ledger: prove: %w", err)
	}
	defer rows.Close()
	var leaves [][]byte
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("ledger: prove: %w", err)
		}
		leaves = append(leaves, h)
	}
	return leaves, rows.Err()
}

// rootLeaves are the stored leaf hashes of the root log in index order.
func rootLeaves(ctx context.Context, o VerifyOptions) ([][]byte, error) {
	rows, err := o.DB.QueryContext(ctx, "SELECT leaf_hash FROM ledger_root_events ORDER BY event_index")
	if err != nil {
		return nil, fmt.Errorf("ledger: prove: %w", err)
	}
	defer rows.Close()
	var leaves [][]byte
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("ledger: prove: %w", err)
		}
		leaves = append(leaves, h)
	}
	return leaves, rows.Err()
}

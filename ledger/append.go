package ledger

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/loom-gateway/loom/tracing"
)

var (
	_ tracing.PostgresTxStep = AppendPostgres
	_ tracing.SQLiteTxStep   = AppendSQLite
)

// batchLog is the part of one batch that goes to one log, in batch order.
type batchLog struct {
	tenant, month string
	ids           []string
	leaves        []Leaf
	hashes        [][]byte
}

// groupBatch splits the stored traces by log, ordered by (tenant, month) bytewise: the
// order heads are locked in. id gives a trace's id as its store keeps it. The leaves are
// hashed in encoding version: LeafVersion, or an older one where a test writes a log as an
// earlier Loom did.
func groupBatch(stored []*tracing.Trace, id func(string) (string, error), version byte) ([]*batchLog, error) {
	byKey := map[[2]string]*batchLog{}
	var logs []*batchLog
	for _, t := range stored {
		sid, err := id(t.ID)
		if err != nil {
			return nil, fmt.Errorf("ledger: trace %q: %w", t.ID, err)
		}
		l := LeafOf(t, sid)
		k := [2]string{l.TenantID, l.Month}
		b := byKey[k]
		if b == nil {
			b = &batchLog{tenant: l.TenantID, month: l.Month}
			byKey[k] = b
			logs = append(logs, b)
		}
		b.ids = append(b.ids, sid)
		b.leaves = append(b.leaves, l)
		b.hashes = append(b.hashes, l.HashVersion(version))
	}
	slices.SortFunc(logs, func(a, b *batchLog) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), cmp.Compare(a.month, b.month))
	})
	return logs, nil
}

// extend appends the batch's leaves to the log whose head is (size, rangeHashes) and
// returns the new head and root.
func (b *batchLog) extend(size int64, rangeHashes []byte) (newRange, root []byte, err error) {
	if newRange, root, err = extendRange(size, rangeHashes, b.hashes); err != nil {
		return nil, nil, fmt.Errorf("ledger: log %s: %w", logName(b.tenant, b.month), err)
	}
	return newRange, root, nil
}

// extendRange appends leaf hashes to the log whose head is (size, rangeHashes: its compact
// range, 32 bytes a hash) and returns the new compact range and root.
func extendRange(size int64, rangeHashes []byte, leaves [][]byte) (newRange, root []byte, err error) {
	hashes, err := splitHashes(rangeHashes)
	if err != nil {
		return nil, nil, fmt.Errorf("head: %w", err)
	}
	r, err := rangeFactory.NewRange(0, uint64(size), hashes)
	if err != nil {
		return nil, nil, fmt.Errorf("head: %w", err)
	}
	for _, h := range leaves {
		if err := r.Append(h, nil); err != nil {
			return nil, nil, err
		}
	}
	if root, err = rangeRoot(r); err != nil {
		return nil, nil, err
	}
	return bytes.Join(r.Hashes(), nil), root, nil
}

func splitHashes(b []byte) ([][]byte, error) {
	if len(b)%32 != 0 {
		return nil, fmt.Errorf("compact range of %d bytes", len(b))
	}
	var hs [][]byte
	for ; len(b) > 0; b = b[32:] {
		hs = append(hs, b[:32:32])
	}
	return hs, nil
}

func pgID(id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

func sqliteID(id string) (string, error) { return id, nil }

// AppendPostgres appends the traces a PostgresSink batch stored to their logs, inside the
// batch's transaction: it creates missing heads, locks the batch's heads with SELECT … FOR
// UPDATE in (tenant, month) order (so writers on several replicas serialise per log and
// never deadlock), records each trace's leaf and stores the new heads. The transaction
// commits with synchronous_commit on, whatever the server's default, so no checkpoint is
// ever exported for a log state a crash could take back. Plug it in with
// tracing.PostgresSinkOptions.TxSteps.
func AppendPostgres(ctx context.Context, tx pgx.Tx, stored []*tracing.Trace) error {
	return appendPostgres(ctx, tx, stored, LeafVersion)
}

// appendPostgres is AppendPostgres with leaves of encoding version.
func appendPostgres(ctx context.Context, tx pgx.Tx, stored []*tracing.Trace, version byte) error {
	logs, err := groupBatch(stored, pgID, version)
	if err != nil || len(logs) == 0 {
		return err
	}
	tenants := make([]string, len(logs))
	months := make([]string, len(logs))
	for i, l := range logs {
		tenants[i], months[i] = l.tenant, l.month
	}
	b := &pgx.Batch{}
	b.Queue("SET LOCAL synchronous_commit = on")
	b.Queue(`INSERT INTO ledger_logs (tenant_id, month)
		SELECT t, m FROM unnest($1::text[], $2::text[]) AS u(t, m) ORDER BY t COLLATE "C", m
		ON CONFLICT DO NOTHING`, tenants, months)
	b.Queue(`SELECT l.tenant_id, l.month, l.size, l.range_hashes FROM ledger_logs l
		JOIN unnest($1::text[], $2::text[]) AS u(t, m) ON l.tenant_id = u.t AND l.month = u.m
		ORDER BY l.tenant_id COLLATE "C", l.month FOR UPDATE OF l`, tenants, months)
	br := tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return fmt.Errorf("ledger: synchronous commit: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		br.Close()
		return fmt.Errorf("ledger: create log heads: %w", err)
	}
	type headRow struct {
		size int64
		rng  []byte
	}
	heads := map[[2]string]headRow{}
	rows, err := br.Query()
	if err == nil {
		for rows.Next() {
			var t, m string
			var h headRow
			if err = rows.Scan(&t, &m, &h.size, &h.rng); err != nil {
				break
			}
			heads[[2]string{t, m}] = h
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ledger: lock log heads: %w", err)
	}

	// One round trip stores the leaves and the heads. The leaves go as arrays (binary,
	// typed: no per-value encoding plan) into one INSERT … SELECT FROM unnest, which costs
	// PostgreSQL the same as a COPY but needs neither COPY's column lookup round trip nor
	// one of its own.
	n := len(stored)
	var (
		lt, lm       = make([]string, 0, n), make([]string, 0, n)
		li           = make([]int64, 0, n)
		lid          = make([]pgtype.UUID, 0, n)
		lh, lrq, lrs = make([][]byte, 0, n), make([][]byte, 0, n), make([][]byte, 0, n)
	)
	sizes := make([]int64, len(logs))
	ranges := make([][]byte, len(logs))
	roots := make([][]byte, len(logs))
	for i, l := range logs {
		h, ok := heads[[2]string{l.tenant, l.month}]
		if !ok {
			return fmt.Errorf("ledger: log %s: head not found after creating it", logName(l.tenant, l.month))
		}
		if ranges[i], roots[i], err = l.extend(h.size, h.rng); err != nil {
			return err
		}
		for j := range l.leaves {
			lf := &l.leaves[j]
			id, err := uuid.Parse(l.ids[j])
			if err != nil {
				return fmt.Errorf("ledger: trace %q: %w", l.ids[j], err)
			}
			lt, lm, li = append(lt, l.tenant), append(lm, l.month), append(li, h.size+int64(j))
			lid = append(lid, pgtype.UUID{Bytes: id, Valid: true})
			lh, lrq, lrs = append(lh, l.hashes[j]), append(lrq, lf.RequestHash[:]), append(lrs, lf.ResponseHash[:])
		}
		sizes[i] = h.size + int64(len(l.leaves))
	}
	b = &pgx.Batch{}
	b.Queue(`INSERT INTO ledger_leaves (tenant_id, month, leaf_index, trace_id, leaf_hash, request_hash, response_hash)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::bytea[], $6::bytea[], $7::bytea[])`,
		lt, lm, li, lid, lh, lrq, lrs)
	b.Queue(`UPDATE ledger_logs l SET size = u.s, range_hashes = u.r, root = u.root
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::bytea[]) AS u(t, m, s, r, root)
		WHERE l.tenant_id = u.t AND l.month = u.m`, tenants, months, sizes, ranges, roots)
	br = tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return fmt.Errorf("ledger: store leaves: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		br.Close()
		return fmt.Errorf("ledger: store log heads: %w", err)
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("ledger: store leaves: %w", err)
	}
	return nil
}

// AppendSQLite is AppendPostgres for a SQLiteSink (tracing.NewSQLiteSink(db,
// ledger.AppendSQLite)). SQLite has one writer at a time, so the transaction itself
// serialises the heads. Its durability is the database's synchronous setting; the
// Checkpointer makes the write-ahead log durable (a FULL wal_checkpoint) before it exports,
// so an exported checkpoint never runs ahead of what a power cut leaves on disk.
func AppendSQLite(ctx context.Context, tx *sql.Tx, stored []*tracing.Trace) error {
	return appendSQLite(ctx, tx, stored, LeafVersion)
}

// appendSQLite is AppendSQLite with leaves of encoding version.
func appendSQLite(ctx context.Context, tx *sql.Tx, stored []*tracing.Trace, version byte) error {
	logs, err := groupBatch(stored, sqliteID, version)
	if err != nil || len(logs) == 0 {
		return err
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO ledger_leaves
		(tenant_id, month, leaf_index, trace_id, leaf_hash, request_hash, response_hash) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer ins.Close()
	for _, l := range logs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_logs (tenant_id, month) VALUES (?, ?) ON CONFLICT DO NOTHING`, l.tenant, l.month); err != nil {
			return fmt.Errorf("ledger: create log head: %w", err)
		}
		var size int64
		var rng []byte
		if err := tx.QueryRowContext(ctx, `SELECT size, range_hashes FROM ledger_logs WHERE tenant_id = ? AND month = ?`, l.tenant, l.month).Scan(&size, &rng); err != nil {
			return fmt.Errorf("ledger: read log head: %w", err)
		}
		newRange, root, err := l.extend(size, rng)
		if err != nil {
			return err
		}
		for j, lf := range l.leaves {
			if _, err := ins.ExecContext(ctx, l.tenant, l.month, size+int64(j), l.ids[j], l.hashes[j], lf.RequestHash[:], lf.ResponseHash[:]); err != nil {
				return fmt.Errorf("ledger: store leaf: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ledger_logs SET size = ?, range_hashes = ?, root = ? WHERE tenant_id = ? AND month = ?`,
			size+int64(len(l.leaves)), newRange, root, l.tenant, l.month); err != nil {
			return fmt.Errorf("ledger: store log head: %w", err)
		}
	}
	return nil
}

package rollup

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loom-gateway/loom/tracing"
)

var _ tracing.PostgresTxStep = Postgres

// Postgres is the rollup step of a tracing.PostgresSink (PostgresSinkOptions.TxSteps): it
// appends what the stored traces add to the rollups inside the batch's transaction, one
// trace_rollup_deltas row per tenant, in one statement. A Folder (PostgresFolder) adds them
// to the rollup tables of every grain later.
func Postgres(ctx context.Context, tx pgx.Tx, stored []*tracing.Trace) error {
	ds := deltas(stored)
	if len(ds) == 0 {
		return nil
	}
	tenants, rows := make([]string, len(ds)), make([][]byte, len(ds))
	first, last := make([]time.Time, len(ds)), make([]time.Time, len(ds))
	for i, d := range ds {
		tenants[i], first[i], last[i], rows[i] = d.tenantID, d.first, d.last, d.encode()
	}
	_, err := tx.Exec(ctx, "INSERT INTO trace_rollup_deltas (tenant_id, first_bucket, last_bucket, rows) "+
		"SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bytea[])", tenants, first, last, rows)
	if err != nil {
		return fmt.Errorf("rollup: append deltas: %w", err)
	}
	return nil
}

// writePostgres upserts rows (sorted by key, totals last) into their tables, at most
// upsertChunk per statement.
func writePostgres(ctx context.Context, tx pgx.Tx, rows []*Row) error {
	for i, part := range split(rows) {
		for len(part) > 0 {
			n := min(len(part), upsertChunk)
			if err := tables[i].writePostgres(ctx, tx, part[:n]); err != nil {
				return err
			}
			part = part[n:]
		}
	}
	return nil
}

// upsertChunk bounds the arrays of one upsert statement.
const upsertChunk = 5000

func (t table) writePostgres(ctx context.Context, tx pgx.Tx, rows []*Row) error {
	n := len(rows)
	keys := make([][]any, len(t.keys))
	for i := range keys {
		keys[i] = make([]any, n)
	}
	var (
		sums  [nSums][]int64
		hists [3][][]byte
	)
	for i := range sums {
		sums[i] = make([]int64, n)
	}
	for i := range hists {
		hists[i] = make([][]byte, n)
	}
	for i, r := range rows {
		for j, v := range t.keyArgs(r.Key, true) {
			keys[j][i] = v
		}
		for j, v := range r.sums() {
			sums[j][i] = v
		}
		hists[0][i], hists[1][i], hists[2][i] = r.Latency.Encode(), r.TTFB.Encode(), r.Overhead.Encode()
	}
	var args []any
	for _, k := range keys {
		args = append(args, k)
	}
	for _, s := range sums {
		args = append(args, s)
	}
	for _, h := range hists {
		args = append(args, h)
	}
	res, err := tx.Query(ctx, t.pgUpsert(), args...)
	if err != nil {
		return fmt.Errorf("rollup: upsert %s: %w", t.name, err)
	}
	due, err := pgx.CollectRows(res, func(r pgx.CollectableRow) ([]any, error) {
		vals, err := r.Values()
		return vals, err
	})
	if err != nil {
		return fmt.Errorf("rollup: upsert %s: %w", t.name, err)
	}
	if len(due) > 0 {
		if err := t.compactPostgres(ctx, tx, due); err != nil {
			return fmt.Errorf("rollup: compact %s: %w", t.name, err)
		}
	}
	return nil
}

// compactPostgres re-encodes the histograms of the rows with the keys (locked by this
// transaction's upsert).
func (t table) compactPostgres(ctx context.Context, tx pgx.Tx, keys [][]any) error {
	b := &pgx.Batch{}
	for _, k := range keys {
		b.Queue(t.selectHists(true), k...)
	}
	br := tx.SendBatch(ctx, b)
	updates := &pgx.Batch{}
	for _, k := range keys {
		var enc [3][]byte
		if err := br.QueryRow().Scan(&enc[0], &enc[1], &enc[2]); err != nil {
			br.Close()
			return err
		}
		args, err := compactArgs(enc)
		if err != nil {
			br.Close()
			return err
		}
		updates.Queue(t.updateHists(true), append(args, k...)...)
	}
	if err := br.Close(); err != nil {
		return err
	}
	return tx.SendBatch(ctx, updates).Close()
}

// compactArgs re-encodes three concatenations of histogram encodings as one each.
func compactArgs(enc [3][]byte) ([]any, error) {
	out := make([]any, 0, 3)
	for _, e := range enc {
		var h Hist
		if err := h.Decode(e); err != nil {
			return nil, err
		}
		out = append(out, h.Encode())
	}
	return out, nil
}

// sums are the additive counts in countColumns order.
func (c *Counts) sums() [nSums]int64 {
	return [nSums]int64{c.Requests, c.PromptTokens, c.CompletionTokens, c.CachedTokens, c.ReasoningTokens, c.CostMicroUSD,
		c.Unpriced, c.LatencyUS, c.TTFBUS, c.TTFBCount, c.OverheadUS}
}

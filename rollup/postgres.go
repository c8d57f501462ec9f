package rollup

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loom-gateway/loom/tracing"
)

var _ tracing.PostgresTxStep = Postgres

// keyColumns and countColumns are the trace_rollups columns a row is written in.
const (
	keyColumns   = "tenant_id, grain_s, bucket_start, provider, model, api_key_id, status_class"
	countColumns = "requests, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_micro_usd, unpriced, " +
		"latency_us, ttfb_us, ttfb_count, overhead_us, latency_hist, ttfb_hist, overhead_hist"
	keyMatch = "tenant_id = $1 AND grain_s = $2 AND bucket_start = $3 AND provider = $4 AND model = $5 AND api_key_id = $6 AND status_class = $7"
	// onConflict adds a row's counts to the stored ones; histograms merge by concatenation.
	onConflict = ` ON CONFLICT (` + keyColumns + `) DO UPDATE SET
		requests = r.requests + excluded.requests, prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
		completion_tokens = r.completion_tokens + excluded.completion_tokens, cached_tokens = r.cached_tokens + excluded.cached_tokens,
		reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens, cost_micro_usd = r.cost_micro_usd + excluded.cost_micro_usd,
		unpriced = r.unpriced + excluded.unpriced, latency_us = r.latency_us + excluded.latency_us,
		ttfb_us = r.ttfb_us + excluded.ttfb_us, ttfb_count = r.ttfb_count + excluded.ttfb_count,
		overhead_us = r.overhead_us + excluded.overhead_us,
		latency_hist = r.latency_hist || excluded.latency_hist, ttfb_hist = r.ttfb_hist || excluded.ttfb_hist,
		overhead_hist = r.overhead_hist || excluded.overhead_hist, appends = r.appends + 1`
	selectHists = "SELECT latency_hist, ttfb_hist, overhead_hist FROM trace_rollups WHERE " + keyMatch
	updateHists = "UPDATE trace_rollups SET latency_hist = $8, ttfb_hist = $9, overhead_hist = $10, appends = 0 WHERE " + keyMatch
)

// pgUpsert adds a batch's rows, given as arrays, in one statement, and returns the keys of
// the rows due for compaction.
var pgUpsert = `WITH up AS (INSERT INTO trace_rollups AS r (` + keyColumns + `, ` + countColumns + `)
	SELECT * FROM unnest($1::text[], $2::integer[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::smallint[],
		$8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
		$15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bytea[], $20::bytea[], $21::bytea[])` +
	onConflict + `
	RETURNING ` + keyColumns + `, appends)
	SELECT ` + keyColumns + ` FROM up WHERE appends >= ` + strconv.Itoa(compactEvery)

// Postgres is the rollup step of a tracing.PostgresSink (PostgresSinkOptions.TxSteps): it
// adds the stored traces to trace_rollups inside the batch's transaction. One statement
// upserts every row the batch touches, in key order; every compactEvery-th update of a row
// re-encodes its histograms (two more round trips for the rows due).
func Postgres(ctx context.Context, tx pgx.Tx, stored []*tracing.Trace) error {
	return writePostgres(ctx, tx, Aggregate(stored))
}

func writePostgres(ctx context.Context, tx pgx.Tx, rows []*Row) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	var (
		tenants, providers, models, keys = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		grains                           = make([]int32, n)
		starts                           = make([]time.Time, n)
		classes                          = make([]int16, n)
		sums                             [11][]int64
		hists                            [3][][]byte
	)
	for i := range sums {
		sums[i] = make([]int64, n)
	}
	for i := range hists {
		hists[i] = make([][]byte, n)
	}
	for i, r := range rows {
		tenants[i], grains[i], starts[i] = r.TenantID, int32(r.Grain/time.Second), r.Start
		providers[i], models[i], keys[i], classes[i] = r.Provider, r.Model, r.APIKeyID, int16(r.StatusClass)
		for j, v := range r.sums() {
			sums[j][i] = v
		}
		hists[0][i], hists[1][i], hists[2][i] = r.Latency.Encode(), r.TTFB.Encode(), r.Overhead.Encode()
	}
	args := []any{tenants, grains, starts, providers, models, keys, classes}
	for _, s := range sums {
		args = append(args, s)
	}
	for _, h := range hists {
		args = append(args, h)
	}
	res, err := tx.Query(ctx, pgUpsert, args...)
	if err != nil {
		return fmt.Errorf("rollup: upsert: %w", err)
	}
	due, err := pgx.CollectRows(res, func(r pgx.CollectableRow) ([]any, error) {
		var (
			tenant, provider, model, key string
			grain                        int32
			start                        time.Time
			class                        int16
		)
		err := r.Scan(&tenant, &grain, &start, &provider, &model, &key, &class)
		return []any{tenant, grain, start, provider, model, key, class}, err
	})
	if err != nil {
		return fmt.Errorf("rollup: upsert: %w", err)
	}
	if len(due) > 0 {
		if err := compactPostgres(ctx, tx, due); err != nil {
			return fmt.Errorf("rollup: compact: %w", err)
		}
	}
	return nil
}

// compactPostgres re-encodes the histograms of the rows with the keys (locked by this
// transaction's upsert).
func compactPostgres(ctx context.Context, tx pgx.Tx, keys [][]any) error {
	b := &pgx.Batch{}
	for _, k := range keys {
		b.Queue(selectHists, k...)
	}
	br := tx.SendBatch(ctx, b)
	updates := &pgx.Batch{}
	for _, k := range keys {
		var enc [3][]byte
		if err := br.QueryRow().Scan(&enc[0], &enc[1], &enc[2]); err != nil {
			br.Close()
			return err
		}
		args := append([]any{}, k...)
		for _, e := range enc {
			c, err := compact(e)
			if err != nil {
				br.Close()
				return err
			}
			args = append(args, c)
		}
		updates.Queue(updateHists, args...)
	}
	if err := br.Close(); err != nil {
		return err
	}
	return tx.SendBatch(ctx, updates).Close()
}

// compact re-encodes a concatenation of histogram encodings as one.
func compact(enc []byte) ([]byte, error) {
	var h Hist
	if err := h.Decode(enc); err != nil {
		return nil, err
	}
	return h.Encode(), nil
}

// sums are the additive counts in countColumns order.
func (c *Counts) sums() [11]int64 {
	return [11]int64{c.Requests, c.PromptTokens, c.CompletionTokens, c.CachedTokens, c.ReasoningTokens, c.CostMicroUSD,
		c.Unpriced, c.LatencyUS, c.TTFBUS, c.TTFBCount, c.OverheadUS}
}

package rollup

import (
	"strconv"
	"strings"
	"time"
)

// table is one rollup table: trace_rollups (every dimension) or trace_rollup_totals (per
// tenant, bucket and status class only, which the ungrouped queries read: a row or few per
// bucket instead of one per provider, model and key).
type table struct {
	name    string
	keys    []string // key columns, in Key order
	pgTypes []string // their PostgreSQL types
	total   bool     // the table of Key.Total rows
}

var (
	fullTable  = table{"trace_rollups", []string{"tenant_id", "grain_s", "bucket_start", "provider", "model", "api_key_id", "status_class"}, []string{"text", "integer", "timestamptz", "text", "text", "text", "smallint"}, false}
	totalTable = table{"trace_rollup_totals", []string{"tenant_id", "grain_s", "bucket_start", "status_class"}, []string{"text", "integer", "timestamptz", "smallint"}, true}
	tables     = [...]table{fullTable, totalTable}
)

// countColumns are the columns of Counts, in Counts.sums order, then the histograms.
var countColumns = []string{"requests", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
	"cost_micro_usd", "unpriced", "latency_us", "ttfb_us", "ttfb_count", "overhead_us", "latency_hist", "ttfb_hist", "overhead_hist"}

const nSums = 11

// keyArgs are a key's column values; pg: as PostgreSQL takes them, else SQLite.
func (t table) keyArgs(k Key, pg bool) []any {
	var start any = k.Start.UnixMicro()
	if pg {
		start = k.Start
	}
	grain := int64(k.Grain / time.Second)
	if t.total {
		return []any{k.TenantID, grain, start, k.StatusClass}
	}
	return []any{k.TenantID, grain, start, k.Provider, k.Model, k.APIKeyID, k.StatusClass}
}

func placeholder(pg bool, i int) string {
	if pg {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

// onConflict adds a row's counts to the stored ones; histograms merge by concatenation
// (SQLite's || makes text of blobs, hence the cast).
func (t table) onConflict(pg bool) string {
	var b strings.Builder
	b.WriteString(" ON CONFLICT (" + strings.Join(t.keys, ", ") + ") DO UPDATE SET ")
	for i, c := range countColumns {
		if i < nSums {
			b.WriteString(c + " = r." + c + " + excluded." + c + ", ")
		} else if pg {
			b.WriteString(c + " = r." + c + " || excluded." + c + ", ")
		} else {
			b.WriteString(c + " = CAST(r." + c + " || excluded." + c + " AS BLOB), ")
		}
	}
	b.WriteString("appends = r.appends + 1")
	return b.String()
}

// keyMatch is the condition selecting one row, its key from placeholder first on.
func (t table) keyMatch(pg bool, first int) string {
	conds := make([]string, len(t.keys))
	for i, k := range t.keys {
		conds[i] = k + " = " + placeholder(pg, first+i)
	}
	return strings.Join(conds, " AND ")
}

// pgUpsert adds a batch's rows, given as arrays, in one statement, and returns the keys of
// the rows due for compaction.
func (t table) pgUpsert() string {
	cols := strings.Join(t.keys, ", ")
	var arrays []string
	for i, typ := range t.pgTypes {
		arrays = append(arrays, placeholder(true, i+1)+"::"+typ+"[]")
	}
	for i := range countColumns {
		typ := "bigint[]"
		if i >= nSums {
			typ = "bytea[]"
		}
		arrays = append(arrays, placeholder(true, len(t.keys)+i+1)+"::"+typ)
	}
	return "WITH up AS (INSERT INTO " + t.name + " AS r (" + cols + ", " + strings.Join(countColumns, ", ") + ") SELECT * FROM unnest(" +
		strings.Join(arrays, ", ") + ")" + t.onConflict(true) + " RETURNING " + cols + ", appends) SELECT " + cols +
		" FROM up WHERE appends >= " + strconv.Itoa(compactEvery)
}

// sqliteUpsert adds one row and returns its appends.
func (t table) sqliteUpsert() string {
	n := len(t.keys) + len(countColumns)
	return "INSERT INTO " + t.name + " AS r (" + strings.Join(t.keys, ", ") + ", " + strings.Join(countColumns, ", ") + ") VALUES (" +
		strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")" + t.onConflict(false) + " RETURNING appends"
}

// selectHists reads a row's histograms; its key is the arguments.
func (t table) selectHists(pg bool) string {
	return "SELECT latency_hist, ttfb_hist, overhead_hist FROM " + t.name + " WHERE " + t.keyMatch(pg, 1)
}

// updateHists sets a row's histograms (the first three arguments) and resets appends; its
// key is the arguments after them.
func (t table) updateHists(pg bool) string {
	return "UPDATE " + t.name + " SET latency_hist = " + placeholder(pg, 1) + ", ttfb_hist = " + placeholder(pg, 2) +
		", overhead_hist = " + placeholder(pg, 3) + ", appends = 0 WHERE " + t.keyMatch(pg, 4)
}

// split divides rows (sorted by key, totals last) by table.
func split(rows []*Row) [len(tables)][]*Row {
	var out [len(tables)][]*Row
	for _, r := range rows {
		if r.Total {
			out[1] = append(out[1], r)
		} else {
			out[0] = append(out[0], r)
		}
	}
	return out
}

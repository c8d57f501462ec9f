package analytics

import (
	"context"
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// UsageRow is one line of the reconciliation export: a tenant's tokens and cost for one
// UTC day, provider, model (as served, else as asked for) and API key.
type UsageRow struct {
	Date, Provider, Model, APIKeyID string
	Requests                        int64
	InputTokens                     int64 // every input token: cached, cache writes and audio included
	CachedTokens                    int64
	CacheWrite5mTokens              int64
	CacheWrite1hTokens              int64
	AudioInputTokens                int64
	OutputTokens                    int64 // reasoning and audio included
	ReasoningTokens                 int64
	AudioOutputTokens               int64
	CostMicroUSD                    int64 // the sum over the priced requests
	UnpricedRequests                int64 // with usage but no cost
	EstimatedRequests               int64 // usage counted by Loom, not reported
}

// UsageColumns name the export's CSV columns after those of OpenAI's and Anthropic's own
// usage exports (num_model_requests, input_cached_tokens, cache writes 5m / 1h, …), so the
// two can be diffed against the invoice.
var UsageColumns = []string{
	"date_utc", "provider", "model", "api_key_id", "num_model_requests",
	"input_tokens", "input_uncached_tokens", "input_cached_tokens", "input_cache_write_5m_tokens",
	"input_cache_write_1h_tokens", "input_audio_tokens", "output_tokens", "output_reasoning_tokens",
	"output_audio_tokens", "cost_usd", "unpriced_requests", "estimated_requests",
}

// Record returns u as a CSV record in UsageColumns' order: the cost in dollars, exactly;
// names defused against spreadsheet formulas.
func (u UsageRow) Record() []string {
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	uncached := u.InputTokens - u.CachedTokens - u.CacheWrite5mTokens - u.CacheWrite1hTokens
	return []string{u.Date, defuseFormula(u.Provider), defuseFormula(u.Model), defuseFormula(u.APIKeyID),
		i64(u.Requests), i64(u.InputTokens), i64(uncached), i64(u.CachedTokens), i64(u.CacheWrite5mTokens),
		i64(u.CacheWrite1hTokens), i64(u.AudioInputTokens), i64(u.OutputTokens), i64(u.ReasoningTokens),
		i64(u.AudioOutputTokens), MicrosToUSD(u.CostMicroUSD), i64(u.UnpricedRequests), i64(u.EstimatedRequests)}
}

// MicrosToUSD formats millionths of a dollar as dollars, exactly: 5848 → "0.005848".
func MicrosToUSD(v int64) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	s := strings.TrimRight(sign+strconv.FormatInt(v/1_000_000, 10)+"."+strconv.FormatInt(1_000_000+v%1_000_000, 10)[1:], "0")
	return strings.TrimSuffix(s, ".")
}

// UsageSelect is the query of the reconciliation export, from FROM traces on: day is the
// dialect's UTC-day expression of created_at; the caller adds WHERE (between the two
// parts) and the ORDER BY that follows.
func UsageSelect(day string) (head, tail string) {
	return `SELECT ` + day + ` AS d, provider, CASE WHEN served_model <> '' THEN served_model ELSE model END AS m, api_key_id,
		COUNT(*), SUM(prompt_tokens), SUM(cached_tokens), SUM(cache_write_5m_tokens), SUM(cache_write_1h_tokens),
		SUM(audio_prompt_tokens), SUM(completion_tokens), SUM(reasoning_tokens), SUM(audio_completion_tokens),
		COALESCE(SUM(cost_micro_usd), 0),
		SUM(CASE WHEN cost_micro_usd IS NULL AND usage_source <> 'missing' THEN 1 ELSE 0 END),
		SUM(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END)
		FROM traces`, ` GROUP BY d, provider, m, api_key_id ORDER BY d, provider, m, api_key_id`
}

// UTCDay is the expression of a trace's UTC day in each dialect.
func UTCDay(postgres bool) string {
	if postgres {
		return "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
	}
	return "strftime('%Y-%m-%d', created_at / 1000000, 'unixepoch')"
}

// ScanUsage scans a row of UsageSelect.
func ScanUsage(scan func(dest ...any) error) (UsageRow, error) {
	var u UsageRow
	err := scan(&u.Date, &u.Provider, &u.Model, &u.APIKeyID, &u.Requests, &u.InputTokens, &u.CachedTokens,
		&u.CacheWrite5mTokens, &u.CacheWrite1hTokens, &u.AudioInputTokens, &u.OutputTokens, &u.ReasoningTokens,
		&u.AudioOutputTokens, &u.CostMicroUSD, &u.UnpricedRequests, &u.EstimatedRequests)
	return u, err
}

func (s *sqlStore) Usage(ctx context.Context, tenantID string, from, to time.Time, fn func(UsageRow) error) error {
	q := s.stmt()
	head, tail := UsageSelect(UTCDay(s.pg))
	q.sql(head)
	q.where(tenantID, Filter{From: from, To: to})
	q.sql(tail)
	return s.each(ctx, q, func(r rows) error {
		u, err := ScanUsage(r.Scan)
		if err != nil {
			return err
		}
		return fn(u)
	})
}

// usage serves GET /v1/analytics/usage: the tenant's reconciliation export as CSV, one row
// per UTC day, provider, model and API key over the range (from/to or window; default the
// last 24 hours).
func (h *Handler) usage(w http.ResponseWriter, r *http.Request, tenantID string) error {
	p, err := readQuery(r, rangeParams)
	if err != nil {
		return err
	}
	from, to, err := parseRange(p, h.cfg.Now(), false)
	if err != nil {
		return err
	}
	var rows [][]string // one per day, provider, model and key: small enough to hold
	if err := h.cfg.Store.Usage(r.Context(), tenantID, from, to, func(u UsageRow) error {
		rows = append(rows, u.Record())
		return nil
	}); err != nil {
		return err
	}
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Type", "text/csv; charset=utf-8")
	hd.Set("Content-Disposition", `attachment; filename="usage.csv"`)
	cw := csv.NewWriter(w)
	cw.Write(UsageColumns)
	cw.WriteAll(rows)
	return nil // the header is sent: a write error is the client leaving
}

package analytics

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// exportFlushRows is how many rows an export writes between flushes.
const exportFlushRows = 500

// csvHeader names the CSV columns: the JSON field names of Trace.
var csvHeader = []string{"id", "created_at", "tenant_id", "api_key_id", "request_id", "model", "served_model",
	"provider", "stream", "status", "error_type", "client_aborted", "prompt_tokens", "completion_tokens",
	"cached_tokens", "reasoning_tokens", "usage_source", "cost_micro_usd", "price_version", "latency_us",
	"ttfb_us", "overhead_us", "response_truncated", "key_version", "fields_cut", "upstream_retries",
	"usage_method", "cache_write_5m_tokens", "cache_write_1h_tokens", "audio_prompt_tokens", "audio_completion_tokens",
	"accepted_prediction_tokens", "rejected_prediction_tokens", "service_tier", "finish_reasons"}

func csvRecord(t *Trace, rec []string) []string {
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	cost := ""
	if t.CostMicroUSD != nil {
		cost = i64(*t.CostMicroUSD)
	}
	rec = append(rec[:0], t.ID, t.CreatedAt.Format(time.RFC3339Nano), t.TenantID, t.APIKeyID, t.RequestID,
		t.Model, t.ServedModel, t.Provider, strconv.FormatBool(t.Stream), strconv.Itoa(t.Status), t.ErrorType,
		strconv.FormatBool(t.ClientAborted), i64(t.PromptTokens), i64(t.CompletionTokens), i64(t.CachedTokens),
		i64(t.ReasoningTokens), t.UsageSource, cost, t.PriceVersion, i64(t.LatencyUS), i64(t.TTFBUS),
		i64(t.OverheadUS), strconv.FormatBool(t.ResponseTruncated), strconv.Itoa(t.KeyVersion),
		strconv.FormatBool(t.FieldsCut), strconv.Itoa(t.UpstreamRetries),
		t.UsageMethod, i64(t.CacheWrite5mTokens), i64(t.CacheWrite1hTokens), i64(t.AudioPromptTokens),
		i64(t.AudioCompletionTokens), i64(t.AcceptedPredictionTokens), i64(t.RejectedPredictionTokens), t.ServiceTier,
		finishReasonsCell(t.FinishReasons))
	for i, v := range rec {
		rec[i] = defuseFormula(v)
	}
	return rec
}

// finishReasonsCell writes the finish reasons as a JSON array, so a reason holding a
// comma or a quote stays one reason.
func finishReasonsCell(r []string) string {
	if len(r) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(r) // strings: cannot fail
	return string(b)
}

// defuseFormula keeps a spreadsheet from running a cell as a formula (OWASP's CSV
// injection advice): a cell starting with = + - @, tab or carriage return gets a leading
// apostrophe. No number Loom writes is negative, so only client-chosen text changes.
func defuseFormula(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// export streams the filtered traces as CSV or JSON lines, newest first, flushing as it
// goes. Once rows are on the wire a failure can no longer become an error answer: the
// connection is cut instead, so the client sees an incomplete download, never a short file
// that looks whole.
func (h *Handler) export(w http.ResponseWriter, r *http.Request, tenantID string) error {
	p, err := readQuery(r, filterParams, []string{"format"})
	if err != nil {
		return err
	}
	f, err := parseFilter(p)
	if err != nil {
		return err
	}
	format := p["format"]
	if format != "csv" && format != "jsonl" {
		return badParam("format", "use csv or jsonl.")
	}
	rc := http.NewResponseController(w)
	cw := csv.NewWriter(w)
	enc := json.NewEncoder(w)
	var rec []string
	rows := 0
	started := false
	start := func() error {
		started = true
		hd := w.Header()
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Content-Disposition", `attachment; filename="traces.`+format+`"`)
		hd.Set("Content-Type", "application/jsonl; charset=utf-8")
		if format == "csv" {
			hd.Set("Content-Type", "text/csv; charset=utf-8")
			return cw.Write(csvHeader)
		}
		return nil
	}
	err = h.cfg.Store.Export(r.Context(), tenantID, f, func(t *Trace) error {
		if !started {
			if err := start(); err != nil {
				return err
			}
		}
		if format == "csv" {
			rec = csvRecord(t, rec)
			if err := cw.Write(rec); err != nil {
				return err
			}
		} else if err := enc.Encode(t); err != nil {
			return err
		}
		if rows++; rows%exportFlushRows == 0 {
			cw.Flush()
			if err := cw.Error(); err != nil {
				return err
			}
			if err := rc.Flush(); !errors.Is(err, http.ErrNotSupported) {
				return err // nil, or the client left
			}
		}
		return nil
	})
	if err == nil && !started {
		err = start()
	}
	if err == nil {
		cw.Flush()
		err = cw.Error()
	}
	if err != nil && started {
		if r.Context().Err() == nil {
			h.log.Error("trace export cut off", "rows", rows, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return err
}

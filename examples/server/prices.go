package main

import (
	"context"
	"database/sql"
	"encoding/csv"

	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/loom-gateway/loom"
	"github.com/loom-gateway/loom/analytics"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/pricing"
	"github.com/loom-gateway/loom/sqlitedb"
)

const pricesUsage = `usage:
  server prices                          the price table: version, every model's prices, aliases
  server prices check  [-from D] [-to D]  models in stored traces that had no price
  server prices export [-from D] [-to D]  CSV: tokens and cost per UTC day, provider, model, API key

D is a UTC date (2026-11-01) or an RFC 3339 time; -from is inclusive, -to exclusive
(-from 2026-11-01 -to 2026-12-01 is November). The default window is the last 30 days.
The store and the price table are the server's: DATABASE_URL, else the SQLite store in
-data (LOOM_DATA_DIR); LOOM_PRICES_FILE overlays the embedded table.`

// runPrices runs the prices command (see pricesUsage), writing its report to stdout.
func runPrices(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	prices, err := loadPrices(getenv("LOOM_PRICES_FILE"))
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return listPrices(stdout, prices)
	}
	sub := args[0]
	if sub != "check" && sub != "export" {
		return usageError{fmt.Errorf("unknown command %q\n%s", sub, pricesUsage)}
	}
	fs := flag.NewFlagSet("prices "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dataDir := fs.String("data", cmpOr(getenv("LOOM_DATA_DIR"), "./loom-data"), "data directory of the embedded store")
	fromText := fs.String("from", "", "start of the window (inclusive)")
	toText := fs.String("to", "", "end of the window (exclusive)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{fmt.Errorf("%s: %w\n%s", sub, err, pricesUsage)}
	}
	to, from := time.Now().UTC(), time.Time{}
	if *toText != "" {
		if to, err = parseWhen(*toText); err != nil {
			return fmt.Errorf("prices %s: -to: %w", sub, err)
		}
	}
	from = to.AddDate(0, 0, -30)
	if *fromText != "" {
		if from, err = parseWhen(*fromText); err != nil {
			return fmt.Errorf("prices %s: -from: %w", sub, err)
		}
	}
	if !from.Before(to) {
		return fmt.Errorf("prices %s: -from %s is not before -to %s", sub, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	db, dialect, err := openReportStore(ctx, getenv("DATABASE_URL"), *dataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	if sub == "check" {
		return checkPrices(ctx, db, dialect, prices, from, to, stdout)
	}
	return exportUsage(ctx, db, dialect, from, to, stdout)
}

// loadPrices is the embedded table overlaid by the operator's file, if any.
func loadPrices(overridePath string) (*pricing.Table, error) {
	prices, err := pricing.Default()
	if err != nil {
		return nil, err
	}
	if overridePath == "" {
		return prices, nil
	}
	override, err := pricing.LoadFile(overridePath)
	if err != nil {
		return nil, err
	}
	return prices.Merge(override), nil
}

func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a date (2006-01-02) nor an RFC 3339 time", s)
	}
	return t.UTC(), nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// openReportStore opens the server's store and brings its schema up to date (as the
// server does at start), so the report's columns exist.
func openReportStore(ctx context.Context, databaseURL, dataDir string) (*sql.DB, string, error) {
	var (
		db      *sql.DB
		dialect string
		err     error
	)
	if databaseURL != "" {
		dialect = migrations.Postgres
		if db, err = sql.Open("pgx", databaseURL); err != nil {
			return nil, "", fmt.Errorf("DATABASE_URL: %w", err)
		}
	} else {
		dialect = migrations.SQLite
		if db, err = sqlitedb.Open(ctx, filepath.Join(dataDir, "loom.db")); err != nil {
			return nil, "", err
		}
	}
	if err := migrations.Up(ctx, db, dialect); err != nil {
		db.Close()
		return nil, "", err
	}
	return db, dialect, nil
}

// listPrices writes the table: its version and notes, one line per model and tier, and
// the aliases.
func listPrices(w io.Writer, prices *pricing.Table) error {
	fmt.Fprintf(w, "price table %s\n%s\n\n", prices.Version(), prices.Notes())
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tTIER\tINPUT\tCACHED\tWRITE_5M\tWRITE_1H\tOUTPUT\tAUDIO_IN\tAUDIO_OUT\tAS_OF\tSOURCE")
	row := func(model, tier string, r pricing.Rates, asOf, source string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", model, tier, usdPerM(&r.Input),
			usdPerM(r.CachedInput), usdPerM(r.CacheWrite5m), usdPerM(r.CacheWrite1h), usdPerM(&r.Output),
			usdPerM(r.AudioInput), usdPerM(r.AudioOutput), cmpOr(asOf, "-"), cmpOr(source, "-"))
	}
	for _, m := range prices.Models() {
		p, _, _ := prices.Lookup(m)
		row(m, "standard", p.Rates, p.AsOf, p.Source)
		if lc := p.LongContext; lc != nil {
			row(m, fmt.Sprintf("prompt>%d", lc.Threshold), lc.Rates, p.AsOf, p.Source)
		}
		for _, tier := range slices.Sorted(mapsKeys(p.Tiers)) {
			row(m, tier, p.Tiers[tier], p.AsOf, p.Source)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	aliases := prices.Aliases()
	if len(aliases) > 0 {
		fmt.Fprintln(w, "\naliases:")
		for _, from := range slices.Sorted(mapsKeys(aliases)) {
			fmt.Fprintf(w, "  %s → %s\n", from, aliases[from])
		}
	}
	_, err := fmt.Fprintln(w, "\nprices are USD per million tokens; - is not priced separately")
	return err
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// usdPerM formats micro-USD per million tokens as USD per million tokens, exactly.
func usdPerM(v *int64) string {
	if v == nil {
		return "-"
	}
	return analytics.MicrosToUSD(*v)
}

// reportModel is the model a trace is reported under: as the upstream said it served the
// request, else as the client asked for it.
const reportModel = "CASE WHEN served_model <> '' THEN served_model ELSE model END"

// window is the trace filter of both reports; the SQLite store keeps created_at as unix
// microseconds.
func window(dialect string) (string, func(from, to time.Time) []any) {
	if dialect == migrations.SQLite {
		return "created_at >= ? AND created_at < ?", func(from, to time.Time) []any { return []any{from.UnixMicro(), to.UnixMicro()} }
	}
	return "created_at >= $1 AND created_at < $2", func(from, to time.Time) []any { return []any{from, to} }
}

// checkPrices lists the models of the traces in [from, to) that have usage but no cost,
// with their request and token counts, and whether the current table would price them.
func checkPrices(ctx context.Context, db *sql.DB, dialect string, prices *pricing.Table, from, to time.Time, w io.Writer) error {
	where, argsOf := window(dialect)
	q := `SELECT provider, ` + reportModel + ` AS m, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens)
		FROM traces WHERE ` + where + ` AND cost_micro_usd IS NULL AND usage_source <> 'missing'
		GROUP BY provider, m ORDER BY provider, m`
	rows, err := db.QueryContext(ctx, q, argsOf(from, to)...)
	if err != nil {
		return fmt.Errorf("prices check: %w", err)
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tMODEL\tREQUESTS\tPROMPT_TOKENS\tCOMPLETION_TOKENS\tNOW_PRICED_AS")
	n := 0
	for rows.Next() {
		var provider, model string
		var requests, prompt, completion int64
		if err := rows.Scan(&provider, &model, &requests, &prompt, &completion); err != nil {
			return fmt.Errorf("prices check: %w", err)
		}
		_, now, ok := prices.Lookup(model)
		if !ok {
			now = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", printable(provider), printable(model), requests, prompt, completion, now)
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("prices check: %w", err)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%d unpriced models in traces from %s to %s (price table %s)\n", n,
		from.Format(time.RFC3339), to.Format(time.RFC3339), prices.Version())
	return err
}

// printable makes a stored name safe for a terminal: a name with control or invalid
// bytes (names come from clients and upstreams) is shown quoted.
func printable(s string) string {
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}

// exportUsage writes the CSV reconciliation export of every tenant's traces in [from, to):
// the columns and rows of the analytics API's /v1/analytics/usage (analytics.UsageColumns).
func exportUsage(ctx context.Context, db *sql.DB, dialect string, from, to time.Time, w io.Writer) error {
	where, argsOf := window(dialect)
	head, tail := analytics.UsageSelect(analytics.UTCDay(dialect == migrations.Postgres))
	rows, err := db.QueryContext(ctx, head+" WHERE "+where+tail, argsOf(from, to)...)
	if err != nil {
		return fmt.Errorf("prices export: %w", err)
	}
	defer rows.Close()
	cw := csv.NewWriter(w)
	cw.Write(analytics.UsageColumns)
	for rows.Next() {
		u, err := analytics.ScanUsage(rows.Scan)
		if err != nil {
			return fmt.Errorf("prices export: %w", err)
		}
		cw.Write(u.Record())
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("prices export: %w", err)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("prices export: %w", err)
	}
	return nil
}

// logUnpriced warns at start about each configured model the price table cannot price,
// so the operator adds it (LOOM_PRICES_FILE) before its requests go uncosted. A route
// that takes any model has nothing to check.
func logUnpriced(log *slog.Logger, routes []loom.Route, prices *pricing.Table) {
	for _, r := range routes {
		for _, m := range r.Models {
			if _, _, ok := prices.Lookup(m); !ok {
				log.Warn("configured model has no price: its requests get no cost until LOOM_PRICES_FILE prices it",
					"provider", r.Name, "model", m, "price_table", prices.Version())
			}
		}
	}
}

// deploymentModels splits AZURE_OPENAI_DEPLOYMENTS entries of the form "name=model"
// ("prod-eastus=gpt-4o-2024-08-06") into the deployment names and the aliases that price
// each deployment as its model; a bare "name" is a deployment without an alias.
func deploymentModels(entries []string) (names []string, models map[string]string) {
	for _, e := range entries {
		name, model, ok := strings.Cut(e, "=")
		name, model = strings.TrimSpace(name), strings.TrimSpace(model)
		names = append(names, name)
		if ok && model != "" {
			if models == nil {
				models = map[string]string{}
			}
			models[name] = model
		}
	}
	return names, models
}

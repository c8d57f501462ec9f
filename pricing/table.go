package pricing

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

//go:embed prices.json
var defaultPrices []byte

// Table is a versioned price table. It is immutable and safe for concurrent use. A nil
// *Table knows no prices: every lookup reports ok=false.
type Table struct {
	version string
	notes   string
	models  map[string]Price
	aliases map[string]string // deployment or other name → model name
}

// Default returns the embedded price table (prices.json): providers' public list prices as
// of its version date. Each call returns a new Table.
func Default() (*Table, error) {
	t, err := Load(bytes.NewReader(defaultPrices))
	if err != nil {
		return nil, fmt.Errorf("pricing: embedded prices.json: %w", err)
	}
	return t, nil
}

// fileFormat is the JSON price table described at Load.
type fileFormat struct {
	Version string               `json:"version"`
	Notes   string               `json:"notes,omitempty"`
	Models  map[string]filePrice `json:"models"`
	Aliases map[string]string    `json:"aliases,omitempty"`
}

type fileRates struct {
	Input        *json.Number `json:"input"`
	CachedInput  *json.Number `json:"cached_input"`
	CacheWrite5m *json.Number `json:"cache_write_5m"`
	CacheWrite1h *json.Number `json:"cache_write_1h"`
	AudioInput   *json.Number `json:"audio_input"`
	AudioOutput  *json.Number `json:"audio_output"`
	Output       *json.Number `json:"output"`
}

type filePrice struct {
	fileRates
	LongContext *struct {
		Threshold int64 `json:"threshold"`
		fileRates
	} `json:"long_context"`
	ServiceTiers map[string]fileRates `json:"service_tiers"`
	Source       string               `json:"source"`
	AsOf         string               `json:"as_of"`
}

// Load parses a price table in the JSON format of the embedded prices.json:
//
//	{
//	  "version": "2026-01-15-acme",
//	  "notes": "negotiated rates, see contract 42",
//	  "models": {
//	    "gpt-4o":   {"input": 2.50, "cached_input": 1.25, "output": 10.00,
//	                 "service_tiers": {"priority": {"input": 4.25, "cached_input": 2.125, "output": 17.00}},
//	                 "source": "https://openai.com/api/pricing/", "as_of": "2025-11-24"},
//	    "claude-sonnet-4": {"input": 3, "cached_input": 0.30, "cache_write_5m": 3.75, "cache_write_1h": 6, "output": 15,
//	                 "long_context": {"threshold": 200000, "input": 6, "cached_input": 0.60,
//	                                  "cache_write_5m": 7.50, "cache_write_1h": 12, "output": 22.50}},
//	    "my-model": {"input": 0.10, "output": 0.20}
//	  },
//	  "aliases": {"prod-gpt4o-eastus": "gpt-4o"}
//	}
//
// version is required and is recorded with every cost computed from the table. Prices are
// USD per million tokens, exact decimals with at most 6 fractional digits, never negative.
// input and output are required for every model, tier and long-context entry; the other
// rates are optional (see Rates for what a missing one means). A service tier is named as
// the response's service_tier reports it. notes, aliases (deployment name → model, see
// WithAliases), source and as_of are optional. Unknown fields are errors, so a misspelt
// "cached-input" cannot silently drop a price.
func Load(r io.Reader) (*Table, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	dec.DisallowUnknownFields()
	var f fileFormat
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("pricing: decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("pricing: decode: unexpected data after the price table")
	}
	if strings.TrimSpace(f.Version) == "" {
		return nil, errors.New("pricing: missing version")
	}
	t := &Table{
		version: f.Version,
		notes:   f.Notes,
		models:  make(map[string]Price, len(f.Models)),
		aliases: make(map[string]string, len(f.Aliases)),
	}
	for name, fp := range f.Models {
		if name == "" {
			return nil, errors.New("pricing: empty model name")
		}
		p, err := fp.price()
		if err != nil {
			return nil, fmt.Errorf("pricing: model %q: %w", name, err)
		}
		t.models[name] = p
	}
	for from, to := range f.Aliases {
		if from == "" || to == "" {
			return nil, fmt.Errorf("pricing: alias %q → %q: empty name", from, to)
		}
		t.aliases[from] = to
	}
	return t, nil
}

func (fp filePrice) price() (Price, error) {
	p := Price{Source: fp.Source, AsOf: fp.AsOf}
	var err error
	if p.Rates, err = fp.rates(); err != nil {
		return p, err
	}
	if lc := fp.LongContext; lc != nil {
		if lc.Threshold <= 0 {
			return p, errors.New("long_context: threshold must be positive")
		}
		p.LongContext = &LongContext{Threshold: lc.Threshold}
		if p.LongContext.Rates, err = lc.rates(); err != nil {
			return p, fmt.Errorf("long_context: %w", err)
		}
	}
	for name, fr := range fp.ServiceTiers {
		if standardTier(name) {
			return p, fmt.Errorf("service_tiers: %q is the standard tier, priced by the entry itself", name)
		}
		r, err := fr.rates()
		if err != nil {
			return p, fmt.Errorf("service_tiers: %q: %w", name, err)
		}
		if p.Tiers == nil {
			p.Tiers = make(map[string]Rates, len(fp.ServiceTiers))
		}
		p.Tiers[name] = r
	}
	return p, nil
}

func (fr fileRates) rates() (Rates, error) {
	var r Rates
	if fr.Input == nil {
		return r, errors.New("missing input price")
	}
	if fr.Output == nil {
		return r, errors.New("missing output price")
	}
	for _, f := range []struct {
		name string
		n    *json.Number
		dst  **int64
	}{
		{"input", fr.Input, nil}, {"output", fr.Output, nil},
		{"cached_input", fr.CachedInput, &r.CachedInput}, {"cache_write_5m", fr.CacheWrite5m, &r.CacheWrite5m},
		{"cache_write_1h", fr.CacheWrite1h, &r.CacheWrite1h}, {"audio_input", fr.AudioInput, &r.AudioInput},
		{"audio_output", fr.AudioOutput, &r.AudioOutput},
	} {
		if f.n == nil {
			continue
		}
		v, err := parseMicros(f.n.String())
		if err != nil {
			return r, fmt.Errorf("%s: %w", f.name, err)
		}
		switch {
		case f.name == "input":
			r.Input = v
		case f.name == "output":
			r.Output = v
		default:
			*f.dst = &v
		}
	}
	return r, nil
}

// LoadFile reads a price table file (see Load), typically an operator's override.
func LoadFile(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pricing: %w", err)
	}
	defer f.Close()
	t, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return t, nil
}

// Merge returns a table with t's models and aliases overlaid by override's: a model or
// alias in override replaces t's entry of the same name whole (all of its prices, tiers
// included), and new names are added. The result carries override's version (and its
// notes, if any), since costs computed with it depend on the override. A nil override
// returns t.
func (t *Table) Merge(override *Table) *Table {
	if override == nil {
		return t
	}
	if t == nil {
		return override
	}
	m := &Table{
		version: override.version,
		notes:   cmpOrString(override.notes, t.notes),
		models:  maps.Clone(t.models),
		aliases: maps.Clone(t.aliases),
	}
	maps.Copy(m.models, override.models)
	maps.Copy(m.aliases, override.aliases)
	return m
}

func cmpOrString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// WithAliases returns a copy of t with additional aliases, each mapping a name the gateway
// sees (an Azure deployment name, say "prod-gpt4o-eastus") to the model it serves
// ("gpt-4o", or a dated snapshot). Aliases are consulted before any other rule; the
// target is then resolved like any model name, but not through other aliases. The
// version is unchanged.
func (t *Table) WithAliases(aliases map[string]string) *Table {
	if t == nil {
		t = &Table{}
	}
	c := *t
	c.aliases = maps.Clone(t.aliases)
	if c.aliases == nil {
		c.aliases = make(map[string]string, len(aliases))
	}
	maps.Copy(c.aliases, aliases)
	return &c
}

// Version returns the table's version, to be recorded with every cost computed from it.
func (t *Table) Version() string {
	if t == nil {
		return ""
	}
	return t.version
}

// Notes returns the table's free-text notes (where its prices come from).
func (t *Table) Notes() string {
	if t == nil {
		return ""
	}
	return t.notes
}

// Models returns the names of the priced models, sorted.
func (t *Table) Models() []string {
	if t == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(t.models))
}

// Aliases returns a copy of the table's aliases (name → model).
func (t *Table) Aliases() map[string]string {
	if t == nil {
		return nil
	}
	return maps.Clone(t.aliases)
}

// Cost returns the cost in micro-USD of usage u of model, and ok=false when the model is
// not in the table (the cost is unknown, never guessed), the usage needs a rate the entry
// lacks, or the cost overflows an int64. See Price.Cost for the formula.
func (t *Table) Cost(model string, u Usage) (microUSD int64, ok bool) {
	p, _, ok := t.Lookup(model)
	if !ok {
		return 0, false
	}
	return p.Cost(u)
}

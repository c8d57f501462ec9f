package pricing

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"os"
	"slices"
	"strings"
)

//go:embed prices.json
var defaultPrices []byte

// Usage is the token usage of one request, OpenAI style: PromptTokens includes
// CachedTokens (prompt tokens served from the provider's cache), and CompletionTokens
// includes any reasoning tokens. Adapters for providers that count otherwise (Anthropic
// reports cache reads apart from input tokens) convert before pricing.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64
}

// Price is one model's price in micro-USD per million tokens (2.50 USD → 2_500_000).
type Price struct {
	Input  int64
	Output int64
	// CachedInput prices cached prompt tokens when HasCachedInput is set; otherwise cached
	// tokens are charged at Input.
	CachedInput    int64
	HasCachedInput bool
}

// Cost returns the cost of u at price p in micro-USD,
// round-half-up(((prompt−cached)·Input + cached·CachedInput + completion·Output) / 10⁶).
// Negative token counts count as zero and cached tokens are clamped to [0, prompt]. The
// arithmetic is exact; ok is false only if the cost does not fit in an int64.
func (p Price) Cost(u Usage) (microUSD int64, ok bool) {
	prompt := max(u.PromptTokens, 0)
	completion := max(u.CompletionTokens, 0)
	cached := min(max(u.CachedTokens, 0), prompt)
	cachedPrice := p.Input
	if p.HasCachedInput {
		cachedPrice = p.CachedInput
	}
	var total uint128
	total.addMul(prompt-cached, p.Input)
	total.addMul(cached, cachedPrice)
	total.addMul(completion, p.Output)
	total.addMul(1, 500_000) // round half up
	if total.overflow || total.hi >= 1_000_000 {
		return 0, false
	}
	q, _ := bits.Div64(total.hi, total.lo, 1_000_000)
	if q > math.MaxInt64 {
		return 0, false
	}
	return int64(q), true
}

// uint128 accumulates a sum of non-negative products without overflowing.
type uint128 struct {
	hi, lo   uint64
	overflow bool
}

func (x *uint128) addMul(a, b int64) {
	if a < 0 || b < 0 { // prices are parsed non-negative and tokens clamped; never here
		x.overflow = true
		return
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	var carry uint64
	x.lo, carry = bits.Add64(x.lo, lo, 0)
	x.hi, carry = bits.Add64(x.hi, hi, carry)
	if carry != 0 {
		x.overflow = true
	}
}

// Table is a versioned price table. It is immutable and safe for concurrent use. A nil
// *Table knows no prices: every lookup reports ok=false.
type Table struct {
	version string
	notes   string
	models  map[string]Price
	aliases map[string]string // deployment or other name → base model name
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

type filePrice struct {
	Input       *json.Number `json:"input"`
	CachedInput *json.Number `json:"cached_input"`
	Output      *json.Number `json:"output"`
}

// Load parses a price table in the JSON format of the embedded prices.json:
//
//	{
//	  "version": "2026-01-15-acme",
//	  "notes": "negotiated rates, see contract 42",
//	  "models": {
//	    "gpt-4o":   {"input": 2.50, "cached_input": 1.25, "output": 10.00},
//	    "my-model": {"input": 0.10, "output": 0.20}
//	  },
//	  "aliases": {"prod-gpt4o-eastus": "gpt-4o"}
//	}
//
// version is required and is recorded with every cost computed from the table. Prices are
// USD per million tokens, exact decimals with at most 6 fractional digits, never negative;
// input and output are required for every model, and without cached_input cached tokens
// are charged at the input price. notes and aliases (deployment name → model, see
// WithAliases) are optional. Unknown fields are errors, so a misspelt "cached-input"
// cannot silently drop a price.
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
	var p Price
	var err error
	if fp.Input == nil {
		return p, errors.New("missing input price")
	}
	if fp.Output == nil {
		return p, errors.New("missing output price")
	}
	if p.Input, err = parseMicros(fp.Input.String()); err != nil {
		return p, fmt.Errorf("input: %w", err)
	}
	if p.Output, err = parseMicros(fp.Output.String()); err != nil {
		return p, fmt.Errorf("output: %w", err)
	}
	if fp.CachedInput != nil {
		if p.CachedInput, err = parseMicros(fp.CachedInput.String()); err != nil {
			return p, fmt.Errorf("cached_input: %w", err)
		}
		p.HasCachedInput = true
	}
	return p, nil
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
// alias in override replaces t's entry of the same name whole (all of its prices), and new
// names are added. The result carries override's version (and its notes, if any), since
// costs computed with it depend on the override. A nil override returns t.
func (t *Table) Merge(override *Table) *Table {
	if override == nil {
		return t
	}
	if t == nil {
		return override
	}
	m := &Table{
		version: override.version,
		notes:   cmpOr(override.notes, t.notes),
		models:  maps.Clone(t.models),
		aliases: maps.Clone(t.aliases),
	}
	maps.Copy(m.models, override.models)
	maps.Copy(m.aliases, override.aliases)
	return m
}

func cmpOr(a, b string) string {
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

// Lookup resolves a model name (see the package documentation for the rules) and returns
// its price and the table entry it resolved to.
func (t *Table) Lookup(model string) (p Price, resolved string, ok bool) {
	if t == nil || model == "" {
		return Price{}, "", false
	}
	if target, ok := t.aliases[model]; ok {
		return t.resolve(target)
	}
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		if target, ok := t.aliases[model[i+1:]]; ok {
			return t.resolve(target)
		}
	}
	return t.resolve(model)
}

// resolve applies the exact, provider-prefix and date-snapshot rules.
func (t *Table) resolve(model string) (Price, string, bool) {
	if p, ok := t.models[model]; ok {
		return p, model, true
	}
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		model = model[i+1:]
		if p, ok := t.models[model]; ok {
			return p, model, true
		}
	}
	if base, ok := stripDateSuffix(model); ok {
		if p, ok := t.models[base]; ok {
			return p, base, true
		}
	}
	return Price{}, "", false
}

// stripDateSuffix removes a trailing snapshot date, "-YYYY-MM-DD" (OpenAI) or "-YYYYMMDD"
// (Anthropic).
func stripDateSuffix(model string) (string, bool) {
	n := len(model)
	if n > 11 && model[n-11] == '-' && model[n-6] == '-' && model[n-3] == '-' &&
		isDigits(model[n-10:n-6]) && isDigits(model[n-5:n-3]) && isDigits(model[n-2:]) {
		return model[:n-11], true
	}
	if n > 9 && model[n-9] == '-' && isDigits(model[n-8:]) {
		return model[:n-9], true
	}
	return "", false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Cost returns the cost in micro-USD of usage u of model, and ok=false when the model is
// not in the table (the cost is unknown, never guessed) or the cost overflows an int64.
// See Price.Cost for the formula.
func (t *Table) Cost(model string, u Usage) (microUSD int64, ok bool) {
	p, _, ok := t.Lookup(model)
	if !ok {
		return 0, false
	}
	return p.Cost(u)
}

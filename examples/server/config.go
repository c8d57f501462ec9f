package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/pricing"
	"github.com/loom-gateway/loom/tenancy"
)

// config is everything the server reads from flags and the environment, checked: parseConfig
// refuses a bad value before anything is written, so a failed start leaves nothing behind.
type config struct {
	Addr            string
	DataDir         string
	DatabaseURL     string
	BootstrapKey    string
	AdminUsername   string              // LOOM_ADMIN_USERNAME: the first admin user, default "admin"
	AdminPassword   string              // LOOM_ADMIN_PASSWORD: its password; default generated and printed once
	MasterKey       *loomcrypto.Keyring // nil: the key file in the data directory
	LedgerKey       string              // LOOM_LEDGER_KEY: the checkpoint signing key (see ledger.go)
	CheckpointDir   string              // LOOM_LEDGER_CHECKPOINTS: where signed checkpoints are exported
	PricesFile      string
	Prices          *pricing.Table // LOOM_PRICES_FILE merged over the embedded table
	Tracing         bool
	StrictTraces    bool
	ShutdownTimeout time.Duration
	KeySetRefresh   time.Duration // loom.Config.KeySetRefresh; 0: off
	PprofAddr       string
	// OTLPProtocol is the OTLP protocol traces are exported over ("grpc" or
	// "http/protobuf"), or "" when no OTEL_EXPORTER_OTLP_*ENDPOINT is set.
	OTLPProtocol string
	// Proxied is set when HTTPS_PROXY or HTTP_PROXY is: upstream calls then go through the
	// standard transport, which honours them.
	Proxied bool

	LogJSON   bool
	LogLevel  slog.Level
	AccessLog bool

	OpenAIKey, OpenAIBaseURL string
	OpenAIModels             []string // nil: any "openai/…" model
	AzureEndpoint, AzureKey  string
	AzureVersion             string
	AzureModels              []string
	AzureDeploymentModels    map[string]string // deployment → the model it runs, for pricing
	AnthropicKey             string
	AnthropicBaseURL         string
	AnthropicModels          []string

	// Warnings are said at start: deprecated names, suspicious values.
	Warnings []string
}

// defaultOpenAIModels are the models of the "openai" route when LOOM_OPENAI_MODELS is unset.
var defaultOpenAIModels = "gpt-4o,gpt-4o-mini,gpt-4.1,gpt-4.1-mini,gpt-4.1-nano,gpt-5,gpt-5-mini,gpt-5-nano,o3,o3-mini,o4-mini"

// envVars lists every variable serve reads, for -h. The pattern: an upstream's own
// variables keep the names its SDK reads (OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT, …, like
// DATABASE_URL and HTTPS_PROXY), so existing environments work; every Loom setting is
// LOOM_*, a route's model list LOOM_<ROUTE>_MODELS.
var envVars = [][2]string{
	{"LOOM_ADDR", "listen address (-addr), default :8080"},
	{"LOOM_DATA_DIR", "data directory (-data), default ./loom-data"},
	{"LOOM_SHUTDOWN_TIMEOUT", "bound on finishing in-flight requests at shutdown (-shutdown-timeout), default 30s"},
	{"DATABASE_URL", "postgres://… for tenants and traces; default: SQLite in the data directory"},
	{"LOOM_MASTER_KEY", "base64 32-byte key, or 2:KEY2,1:KEY1 to rotate; default: a key file in the data directory"},
	{"LOOM_LEDGER_KEY", "the audit ledger's checkpoint signing key; default: ledger.key in the data directory (SQLite only)"},
	{"LOOM_LEDGER_CHECKPOINTS", "directory signed checkpoints are exported to, default <data>/checkpoints"},
	{"LOOM_BOOTSTRAP_KEY", "the first tenant's API key (loom_…) on first start; default: generated and printed once"},
	{"LOOM_ADMIN_USERNAME, LOOM_ADMIN_PASSWORD", "the first admin user on first start (default admin, password generated and printed once)"},
	{"OPENAI_API_KEY, OPENAI_BASE_URL", "the openai route (base URL ending in /v1)"},
	{"LOOM_OPENAI_MODELS", "models of the openai route, comma-separated; * passes any openai/… model"},
	{"AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, AZURE_OPENAI_API_VERSION", "the azure route"},
	{"LOOM_AZURE_MODELS", "deployments of the azure route (was AZURE_OPENAI_DEPLOYMENTS)"},
	{"ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL", "the anthropic route"},
	{"LOOM_ANTHROPIC_MODELS", "models of the anthropic route"},
	{"LOOM_PRICES_FILE", "price table override (JSON)"},
	{"LOOM_TRACING", "on|off, default on"},
	{"LOOM_TRACE_STRICT", "on|off, default off: answer only after the trace is durably spooled"},
	{"LOOM_LOG_FORMAT", "text|json, default text"},
	{"LOOM_LOG_LEVEL", "debug|info|warn|error, default info"},
	{"LOOM_ACCESS_LOG", "on|off, default on: one line per request at INFO"},
	{"LOOM_KEY_SET_REFRESH", "how often the whole key set is re-read, so a store outage spares keys not used since start; default 1m, 0 off"},
	{"LOOM_PPROF_ADDR", "serve Go profiles on this separate address"},
	{"HTTPS_PROXY, HTTP_PROXY", "upstream calls go through this proxy"},
}

// deprecatedEnv maps old variable names to their replacements; the old name still works.
var deprecatedEnv = map[string]string{"AZURE_OPENAI_DEPLOYMENTS": "LOOM_AZURE_MODELS"}

func printEnvVars(w io.Writer) {
	fmt.Fprintln(w, "\nEnvironment variables:")
	for _, v := range envVars {
		fmt.Fprintf(w, "  %s\n    \t%s\n", v[0], v[1])
	}
}

// serveFlags is the serve command's flag set, bound to c, with each flag's default taken
// from its environment variable.
func serveFlags(c *config, env func(string) string) (*flag.FlagSet, error) {
	fs := newFlagSet("serve")
	timeout := 30 * time.Second
	if v := env("LOOM_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("LOOM_SHUTDOWN_TIMEOUT: %q is not a positive duration (say 30s or 2m)", v)
		}
		timeout = d
	}
	fs.StringVar(&c.Addr, "addr", or(env("LOOM_ADDR"), ":8080"), "listen address (LOOM_ADDR)")
	fs.StringVar(&c.DataDir, "data", or(env("LOOM_DATA_DIR"), "./loom-data"), "data directory for the embedded store, key file, trace spool and lock (LOOM_DATA_DIR)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", timeout, "how long in-flight requests may take to finish on shutdown (LOOM_SHUTDOWN_TIMEOUT)")
	return fs, nil
}

// parseConfig reads and checks the serve command's flags and environment. It reads files
// (the price table, an existing master key file) but writes nothing.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	fs, err := serveFlags(&c, env)
	if err != nil {
		return c, err
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return c, err
	} else if err != nil {
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Errorf("serve takes no arguments, got %q", fs.Arg(0))}
	}
	if c.ShutdownTimeout <= 0 {
		bad("-shutdown-timeout: %v is not a positive duration", c.ShutdownTimeout)
	}
	if err := checkAddr(c.Addr); err != nil {
		bad("-addr (LOOM_ADDR): %v", err)
	}
	if c.PprofAddr = env("LOOM_PPROF_ADDR"); c.PprofAddr != "" {
		if err := checkAddr(c.PprofAddr); err != nil {
			bad("LOOM_PPROF_ADDR: %v", err)
		}
	}
	if c.OTLPProtocol = otlpProtocol(env); c.OTLPProtocol != "" && c.OTLPProtocol != "grpc" && c.OTLPProtocol != "http/protobuf" {
		bad("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not grpc or http/protobuf", c.OTLPProtocol)
	}
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		c.Proxied = c.Proxied || env(k) != ""
	}
	on := func(name string, def bool) bool {
		v, err := parseBool(env(name), def)
		if err != nil {
			bad("%s: %v", name, err)
		}
		return v
	}
	c.Tracing = on("LOOM_TRACING", true)
	c.StrictTraces = on("LOOM_TRACE_STRICT", false)
	c.AccessLog = on("LOOM_ACCESS_LOG", true)
	switch f := strings.ToLower(env("LOOM_LOG_FORMAT")); f {
	case "", "text":
	case "json":
		c.LogJSON = true
	default:
		bad("LOOM_LOG_FORMAT: %q is not text or json", f)
	}
	if v := env("LOOM_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			bad("LOOM_LOG_LEVEL: %q is not debug, info, warn or error", v)
		}
	}

	// The whole key set, so a database outage spares even keys not used since start.
	if v := env("LOOM_KEY_SET_REFRESH"); v != "" {
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			bad("LOOM_KEY_SET_REFRESH: %q is not a duration such as 1m, or 0 for off", v)
		} else {
			c.KeySetRefresh = d
		}
	} else {
		c.KeySetRefresh = time.Minute
	}

	c.DataDir = filepath.Clean(c.DataDir)
	c.CheckpointDir = or(env("LOOM_LEDGER_CHECKPOINTS"), filepath.Join(c.DataDir, "checkpoints"))
	if c.LedgerKey = env("LOOM_LEDGER_KEY"); c.LedgerKey != "" {
		if _, err := note.NewSigner(c.LedgerKey); err != nil {
			bad("LOOM_LEDGER_KEY: not a checkpoint signing key (PRIVATE+KEY+…, from ledger.GenerateKey)")
		}
	} else if env("DATABASE_URL") == "" {
		if _, err := readLedgerKeyFile(c.DataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			bad("ledger key file: %v", err)
		}
	}
	if st, err := os.Stat(c.DataDir); err == nil && !st.IsDir() {
		bad("-data (LOOM_DATA_DIR): %s is not a directory", c.DataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		bad("-data (LOOM_DATA_DIR): %v", err)
	}
	if c.DatabaseURL = env("DATABASE_URL"); c.DatabaseURL != "" {
		// pgx's message shows the string with its password masked.
		if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
			bad("DATABASE_URL: not a PostgreSQL connection string (postgres://user@host:5432/db): %v", err)
		}
	}
	if v := env("LOOM_MASTER_KEY"); v != "" {
		k, err := loomcrypto.ParseKeyring(v)
		if err != nil {
			bad("LOOM_MASTER_KEY: %v", err)
		}
		c.MasterKey = k
	} else if c.DatabaseURL != "" {
		bad("LOOM_MASTER_KEY is required with DATABASE_URL: trace bodies and provider keys are encrypted with it " +
			"(make one with: head -c 32 /dev/urandom | base64)")
	} else if b, err := readSecretFile(filepath.Join(c.DataDir, "master.key")); err == nil {
		if _, err := loomcrypto.ParseKeyring(strings.TrimSpace(string(b))); err != nil {
			bad("master key file %s: %v", filepath.Join(c.DataDir, "master.key"), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		bad("master key file: %v", err)
	}
	if c.BootstrapKey = env("LOOM_BOOTSTRAP_KEY"); c.BootstrapKey != "" &&
		(!strings.HasPrefix(c.BootstrapKey, tenancy.KeyPrefix) || len(c.BootstrapKey) < tenancy.MinImportedKeyLen || len(c.BootstrapKey) > 256) {
		bad("LOOM_BOOTSTRAP_KEY must start with %q and be %d to 256 characters", tenancy.KeyPrefix, tenancy.MinImportedKeyLen)
	}
	c.AdminUsername, c.AdminPassword = or(env("LOOM_ADMIN_USERNAME"), "admin"), env("LOOM_ADMIN_PASSWORD")
	if err := checkAdminUser(c.AdminUsername, c.AdminPassword); err != nil {
		bad("%v", err)
	}
	c.PricesFile = env("LOOM_PRICES_FILE")
	if c.Prices, err = loadPrices(c.PricesFile); err != nil {
		bad("LOOM_PRICES_FILE: %v", err) // the embedded table is tested; the file is the operator's
	}

	c.OpenAIKey, c.OpenAIBaseURL = env("OPENAI_API_KEY"), env("OPENAI_BASE_URL")
	if c.OpenAIBaseURL != "" {
		if err := checkURL(c.OpenAIBaseURL); err != nil {
			bad("OPENAI_BASE_URL: %v", err)
		} else if !strings.HasSuffix(strings.TrimRight(c.OpenAIBaseURL, "/"), "/v1") {
			c.Warnings = append(c.Warnings, fmt.Sprintf("OPENAI_BASE_URL %s does not end in /v1: requests go to %s/chat/completions, "+
				"which most OpenAI-compatible servers answer 404", c.OpenAIBaseURL, strings.TrimRight(c.OpenAIBaseURL, "/")))
		}
	}
	if m := or(env("LOOM_OPENAI_MODELS"), defaultOpenAIModels); m != "*" {
		c.OpenAIModels = splitList(m)
	}
	c.AzureEndpoint, c.AzureKey = env("AZURE_OPENAI_ENDPOINT"), env("AZURE_OPENAI_API_KEY")
	c.AzureVersion = env("AZURE_OPENAI_API_VERSION")
	if c.AzureEndpoint != "" {
		if err := checkURL(c.AzureEndpoint); err != nil {
			bad("AZURE_OPENAI_ENDPOINT: %v", err)
		}
		if c.AzureKey == "" {
			bad("AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_API_KEY is not")
		}
	}
	// "name=model" prices a deployment as the model it runs.
	c.AzureModels, c.AzureDeploymentModels = deploymentModels(splitList(c.renamed(env, "LOOM_AZURE_MODELS")))
	c.AnthropicKey, c.AnthropicBaseURL = env("ANTHROPIC_API_KEY"), env("ANTHROPIC_BASE_URL")
	if c.AnthropicBaseURL != "" {
		if err := checkURL(c.AnthropicBaseURL); err != nil {
			bad("ANTHROPIC_BASE_URL: %v", err)
		}
		if c.AnthropicKey == "" {
			bad("ANTHROPIC_BASE_URL is set but ANTHROPIC_API_KEY is not")
		}
	}
	c.AnthropicModels = splitList(env("LOOM_ANTHROPIC_MODELS"))
	return c, errors.Join(errs...)
}

// renamed reads name, or the deprecated variable it replaces (with a warning).
func (c *config) renamed(env func(string) string, name string) string {
	if v := env(name); v != "" {
		return v
	}
	for old, now := range deprecatedEnv {
		if now == name && env(old) != "" {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s is deprecated: use %s", old, name))
			return env(old)
		}
	}
	return ""
}

// parseBool reads the one set of boolean spellings every on/off setting accepts.
func parseBool(v string, def bool) (bool, error) {
	switch strings.ToLower(v) {
	case "":
		return def, nil
	case "on", "true", "1":
		return true, nil
	case "off", "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not on/off, true/false or 1/0", v)
}

// checkAddr accepts host:port with a numeric port (0 picks a free one).
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (say :8080 or 127.0.0.1:8080)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}

// checkURL accepts an absolute http or https URL.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return nil
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

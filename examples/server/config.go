package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// config is everything the server reads from flags and the environment.
type config struct {
	Addr            string
	DataDir         string
	DatabaseURL     string
	BootstrapKey    string
	MasterKey       string
	LedgerKey       string // LOOM_LEDGER_KEY: the checkpoint signing key (see ledger.go)
	CheckpointDir   string // LOOM_LEDGER_CHECKPOINTS: where signed checkpoints are exported
	PricesFile      string
	Tracing         bool
	StrictTraces    bool
	ShutdownTimeout time.Duration
	KeySetRefresh   time.Duration // loom.Config.KeySetRefresh; 0: off
	PprofAddr       string
	// Proxied is set when HTTPS_PROXY or HTTP_PROXY is: upstream calls then go through the
	// standard transport, which honours them.
	Proxied bool

	OpenAIKey, OpenAIBaseURL string
	OpenAIModels             []string // nil: any "openai/…" model
	AzureEndpoint, AzureKey  string
	AzureVersion             string
	AzureDeployments         []string
	AzureDeploymentModels    map[string]string // deployment → the model it runs, for pricing
	AnthropicKey             string
	AnthropicBaseURL         string
	AnthropicModels          []string
}

// defaultOpenAIModels can be asked for without the "openai/" prefix.
var defaultOpenAIModels = "gpt-4o,gpt-4o-mini,gpt-4.1,gpt-4.1-mini,gpt-4.1-nano,gpt-5,gpt-5-mini,gpt-5-nano,o3,o3-mini,o4-mini"

func parseConfig(args []string, getenv func(string) string) (config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var c config
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.StringVar(&c.Addr, "addr", env("LOOM_ADDR", ":8080"), "listen address (LOOM_ADDR)")
	fs.StringVar(&c.DataDir, "data", env("LOOM_DATA_DIR", "./loom-data"), "data directory for the embedded store, key file and trace spool (LOOM_DATA_DIR)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may take to finish on shutdown")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.PprofAddr = getenv("LOOM_PPROF_ADDR")
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		c.Proxied = c.Proxied || getenv(k) != ""
	}
	c.DatabaseURL = getenv("DATABASE_URL")
	c.BootstrapKey = getenv("LOOM_BOOTSTRAP_KEY")
	c.MasterKey = getenv("LOOM_MASTER_KEY")
	c.LedgerKey = getenv("LOOM_LEDGER_KEY")
	c.CheckpointDir = env("LOOM_LEDGER_CHECKPOINTS", filepath.Join(c.DataDir, "checkpoints"))
	c.PricesFile = getenv("LOOM_PRICES_FILE")
	switch v := env("LOOM_TRACING", "on"); v {
	case "on":
		c.Tracing = true
	case "off":
	default:
		return c, fmt.Errorf("LOOM_TRACING must be on or off, not %q", v)
	}
	c.StrictTraces = getenv("LOOM_TRACE_STRICT") == "on"
	// The whole key set, so a database outage spares even keys not used since start.
	ks, err := time.ParseDuration(env("LOOM_KEY_SET_REFRESH", "1m"))
	if err != nil || ks < 0 {
		return c, fmt.Errorf("LOOM_KEY_SET_REFRESH must be a duration such as 1m, or 0 for off, not %q", getenv("LOOM_KEY_SET_REFRESH"))
	}
	c.KeySetRefresh = ks
	c.OpenAIKey, c.OpenAIBaseURL = getenv("OPENAI_API_KEY"), getenv("OPENAI_BASE_URL")
	if m := env("LOOM_OPENAI_MODELS", defaultOpenAIModels); m != "*" {
		c.OpenAIModels = splitList(m)
	}
	c.AzureEndpoint, c.AzureKey = getenv("AZURE_OPENAI_ENDPOINT"), getenv("AZURE_OPENAI_API_KEY")
	c.AzureVersion = getenv("AZURE_OPENAI_API_VERSION")
	c.AzureDeployments, c.AzureDeploymentModels = deploymentModels(splitList(getenv("AZURE_OPENAI_DEPLOYMENTS")))
	c.AnthropicKey, c.AnthropicBaseURL = getenv("ANTHROPIC_API_KEY"), getenv("ANTHROPIC_BASE_URL")
	c.AnthropicModels = splitList(getenv("LOOM_ANTHROPIC_MODELS"))
	return c, nil
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

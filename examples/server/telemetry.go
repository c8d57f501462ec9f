package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/loom-gateway/loom/otelsink"
)

// metricsRegistry is the registry /metrics serves: the gateway's collectors, registered
// by loom.New, beside the standard Go runtime and process ones.
func metricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// otlpProtocol reads which OTLP protocol the standard OpenTelemetry variables ask for, or
// "" when they configure no endpoint (no export).
func otlpProtocol(getenv func(string) string) string {
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return ""
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := getenv(k); v != "" {
			return v
		}
	}
	return "http/protobuf"
}

// otlpSink returns the OTel sink exporting over protocol. The exporter reads the rest of
// the OTEL_EXPORTER_OTLP_* variables (endpoint, headers, TLS, timeout) itself; its own
// retries are off because the trace pipeline retries, with the spool behind it.
func otlpSink(ctx context.Context, protocol string, cfg config) (*otelsink.Sink, error) {
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: Loom exports over grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	hosts := map[string]string{"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
	for name, base := range map[string]string{"openai": cfg.OpenAIBaseURL, "azure": cfg.AzureEndpoint, "anthropic": cfg.AnthropicBaseURL} {
		if u, err := url.Parse(base); err == nil && u.Hostname() != "" {
			hosts[name] = u.Hostname()
		}
	}
	return otelsink.New(otelsink.Config{
		Exporter:        exp,
		ServerAddresses: hosts,
		ProviderNames:   map[string]string{"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic"},
	})
}

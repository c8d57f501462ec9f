package pricing_test

import (
	"fmt"
	"strings"

	"github.com/loom-gateway/loom/pricing"
)

func ExampleTable_Cost() {
	prices, err := pricing.Default()
	if err != nil {
		fmt.Println(err)
		return
	}
	u := pricing.Usage{PromptTokens: 3694, CompletionTokens: 57, CachedTokens: 3584}
	microUSD, ok := prices.Cost("openai/gpt-4o-2024-08-06", u)
	fmt.Println(microUSD, ok)

	_, ok = prices.Cost("my-fine-tune", u)
	fmt.Println(ok)
	// Output:
	// 5325 true
	// false
}

func ExampleTable_Merge() {
	base, err := pricing.Default()
	if err != nil {
		fmt.Println(err)
		return
	}
	override, err := pricing.Load(strings.NewReader(`{
		"version": "2026-01-15-acme",
		"models": {"acme-llm": {"input": 0.10, "output": 0.20}},
		"aliases": {"prod-gpt4o-eastus": "gpt-4o"}
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	prices := base.Merge(override)
	fmt.Println(prices.Version())
	fmt.Println(prices.Cost("acme-llm", pricing.Usage{PromptTokens: 1000, CompletionTokens: 1000}))
	fmt.Println(prices.Cost("prod-gpt4o-eastus", pricing.Usage{PromptTokens: 1000}))
	// Output:
	// 2026-01-15-acme
	// 300 true
	// 2500 true
}

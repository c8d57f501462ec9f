// Package pricing turns a request's token usage into its cost, in integer micro-dollars.
//
// Prices come from a versioned table: the embedded default (prices.json, the providers'
// public list prices as of its version date, see [Default]) optionally merged with an
// operator's override file in the same format ([LoadFile], [Table.Merge]). The gateway
// records the table's [Table.Version] next to each trace's cost, so a cost can always be
// traced back to the prices that produced it.
//
// # Exact money
//
// Prices are parsed from the JSON text as exact decimals (at most 6 fractional digits) and
// kept as integer micro-USD per million tokens: 2.50 USD per million tokens is 2_500_000.
// A cost is computed in integers,
//
//	total    = (prompt − cached)·input + cached·cached_input + completion·output
//	microUSD = round-half-up(total / 1_000_000)
//
// so no float ever touches money and the same usage always costs the same.
//
// # Model names
//
// [Table.Lookup] resolves a model name in this order, and never guesses beyond it:
//
//  1. an alias (an Azure deployment name, say) maps to a base model name, which is then
//     resolved by the rules below;
//  2. the exact name, so a dated snapshot priced differently (gpt-4o-2024-05-13) keeps its
//     own price;
//  3. the name without a provider prefix ("openai/gpt-4o" → "gpt-4o");
//  4. that name without a trailing date snapshot ("gpt-4o-2024-08-06" → "gpt-4o",
//     "claude-sonnet-4-20250514" → "claude-sonnet-4").
//
// Anything else is unknown: [Table.Cost] reports ok=false and the trace's cost stays null.
//
// A Table is immutable and safe for concurrent use; Merge and WithAliases return new tables.
package pricing

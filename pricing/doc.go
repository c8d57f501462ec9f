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
// A cost is the sum of each kind of token times its rate (see [Price.Cost]: cache reads,
// 5-minute and 1-hour cache writes, audio, the rest of the prompt, the completion), at the
// rates of the reported service tier or of the long-context tier, computed in integers and
// rounded half up once:
//
//	microUSD = round-half-up(Σ tokens·rate / 1_000_000)
//
// so no float ever touches money and the same usage always costs the same.
//
// # Model names
//
// [Table.Lookup] resolves a model name in this order, and never guesses beyond it:
//
//  1. an alias (an Azure deployment name, say) maps to a model name, which is then
//     resolved by the rules below (not through other aliases);
//  2. the exact name, so a dated snapshot priced differently (gpt-4o-2024-05-13,
//     gpt-3.5-turbo-0613) keeps its own price;
//  3. the name without a provider prefix ("openai/gpt-4o" → "gpt-4o");
//  4. a Bedrock id without region, vendor and version
//     ("us.anthropic.claude-sonnet-4-20250514-v1:0" → "claude-sonnet-4-20250514");
//  5. OpenAI's spelling of an Azure model name ("gpt-35-turbo-0125" → "gpt-3.5-turbo-0125");
//  6. that name without a trailing snapshot: "-2024-08-06" (OpenAI), "-20250514"
//     (Anthropic), "-0125" (a valid MMDD: older OpenAI and Azure), "-latest".
//
// Anything else is unknown: [Table.Cost] reports ok=false and the trace's cost stays null.
//
// A Table is immutable and safe for concurrent use; Merge and WithAliases return new tables.
package pricing

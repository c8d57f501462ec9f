package pricing

import "strings"

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

// resolve tries the forms of model in order (exact first, so a snapshot priced apart
// keeps its own price) and returns the first priced one.
func (t *Table) resolve(model string) (Price, string, bool) {
	var forms [5]string
	for _, name := range nameForms(model, forms[:0]) {
		if p, ok := t.models[name]; ok {
			return p, name, true
		}
	}
	return Price{}, "", false
}

// nameForms appends the names model may be priced under, most specific first: the name
// itself; without a provider prefix ("openai/gpt-4o"); without Bedrock's region, vendor
// and version ("us.anthropic.claude-sonnet-4-20250514-v1:0"); in OpenAI's spelling of an
// Azure model name ("gpt-35-turbo-0613" → "gpt-3.5-turbo-0613"); and, last, without a
// snapshot suffix.
func nameForms(model string, out []string) []string {
	out = append(out, model)
	name := model
	add := func(n string) {
		if n != name && n != "" {
			name = n
			out = append(out, n)
		}
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		add(name[i+1:])
	}
	if i := strings.Index(name, "anthropic."); i >= 0 {
		n := name[i+len("anthropic."):]
		if j := strings.LastIndex(n, "-v"); j >= 0 && strings.Contains(n[j:], ":") {
			n = n[:j]
		}
		add(n)
	}
	if rest, ok := strings.CutPrefix(name, "gpt-35-"); ok {
		add("gpt-3.5-" + rest)
	}
	if base, ok := stripSnapshot(name); ok {
		add(base)
	}
	return out
}

// stripSnapshot removes a trailing snapshot: "-YYYY-MM-DD" (OpenAI), "-YYYYMMDD"
// (Anthropic), "-MMDD" (older OpenAI and Azure: gpt-3.5-turbo-0125), or the "-latest"
// alias.
func stripSnapshot(model string) (string, bool) {
	n := len(model)
	switch {
	case n > 11 && model[n-11] == '-' && model[n-6] == '-' && model[n-3] == '-' &&
		isDigits(model[n-10:n-6]) && isDigits(model[n-5:n-3]) && isDigits(model[n-2:]):
		return model[:n-11], true
	case n > 9 && model[n-9] == '-' && isDigits(model[n-8:]):
		return model[:n-9], true
	case n > 5 && model[n-5] == '-' && isDigits(model[n-4:]) && validMonthDay(model[n-4:]):
		return model[:n-5], true
	case n > 7 && strings.HasSuffix(model, "-latest"):
		return model[:n-7], true
	}
	return "", false
}

// validMonthDay reports whether four digits read as MMDD.
func validMonthDay(s string) bool {
	m := int(s[0]-'0')*10 + int(s[1]-'0')
	d := int(s[2]-'0')*10 + int(s[3]-'0')
	return m >= 1 && m <= 12 && d >= 1 && d <= 31
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

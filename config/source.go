package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// source remembers where each setting came from, so an error can say
// "tokenbroker.yaml:12" or "TOKENBROKER_LISTEN" next to its path.
type source struct {
	file  string
	lines map[string]int    // "providers[1].refresh_window" -> line of its value
	env   map[string]string // path -> the environment variable that set it
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 0 {
		return ""
	}
	return p[:i]
}

// lineOf returns the line of a path, 0 when unknown.
func (s *source) lineOf(path string) int {
	if s == nil {
		return 0
	}
	for p := path; p != ""; p = parentPath(p) {
		if line, ok := s.lines[p]; ok {
			return line
		}
	}
	return 0
}

// indexLines maps every path in the document to the line of its value.
func indexLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[p] = k.Line
			indexLines(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out[p] = c.Line
			indexLines(c, p, out)
		}
	}
}

// pathAtLine is the deepest path whose value starts on line: the field a
// yaml type error on that line is about.
func pathAtLine(lines map[string]int, line int) string {
	best := ""
	for p, l := range lines {
		if l == line && (len(p) > len(best) || (len(p) == len(best) && p < best)) {
			best = p
		}
	}
	return best
}

var typeErrorRE = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")

// plainType says what a Go type is in the words of the file.
func plainType(goType string) string {
	switch {
	case goType == "int" || goType == "int64":
		return "a whole number, like 8"
	case goType == "float64":
		return "a number, like 2.5"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a single value (quote it)"
	case goType == "[]int":
		return "a list of status codes, like [401]"
	case strings.HasPrefix(goType, "[]"):
		return "a list, like [a, b]"
	case strings.HasPrefix(goType, "map["):
		return "a set of name: value lines"
	default:
		return "a section of name: value lines"
	}
}

// rewordTypeError turns one of yaml's "cannot unmarshal !!str `eight` into
// int" messages into a fieldError naming the path and what is wanted.
func rewordTypeError(src *source, msg string) (*fieldError, bool) {
	sub := typeErrorRE.FindStringSubmatch(msg)
	if sub == nil {
		return nil, false
	}
	line, _ := strconv.Atoi(sub[1])
	path := pathAtLine(src.lines, line)
	if path == "" {
		path = "line " + sub[1]
	}
	got := sub[3]
	if sub[2] == "map" || sub[2] == "seq" {
		got = map[string]string{"map": "a section", "seq": "a list"}[sub[2]]
	} else {
		got = strconv.Quote(got)
	}
	return &fieldError{file: src.file, line: line, path: path, problem: fmt.Sprintf("%s must be %s", got, plainType(sub[4]))}, true
}

var expandRE = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${VAR} (and ${VAR:-default}) in every string of the
// decoded file with the environment's value; $$ is a literal $. An unset
// variable without a default is an error naming the path and the variable
// (never a value). Only strings are expanded: durations and sizes are
// strings in the file, numbers and booleans are not.
func expandEnv(v reflect.Value, path string, lookup func(string) (string, bool), errs *[]error, src *source) {
	switch v.Kind() {
	case reflect.String:
		s := v.String()
		if !strings.Contains(s, "$") {
			return
		}
		var missing []string
		out := expandRE.ReplaceAllStringFunc(s, func(m string) string {
			if m == "$$" {
				return "$"
			}
			sub := expandRE.FindStringSubmatch(m)
			if val, ok := lookup(sub[1]); ok && val != "" {
				return val
			}
			if sub[2] != "" {
				return sub[3]
			}
			missing = append(missing, sub[1])
			return ""
		})
		for _, name := range missing {
			*errs = append(*errs, &fieldError{file: src.file, line: src.lineOf(path), path: path,
				problem: fmt.Sprintf("uses ${%s}, but the environment variable %s is not set (write ${%s:-default} for a fallback)", name, name, name)})
		}
		v.SetString(out)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || !t.Field(i).IsExported() {
				continue
			}
			expandEnv(v.Field(i), joinPath(path, name), lookup, errs, src)
		}
	case reflect.Slice:
		for i := range v.Len() {
			expandEnv(v.Index(i), fmt.Sprintf("%s[%d]", path, i), lookup, errs, src)
		}
	case reflect.Map:
		if v.Type().Elem().Kind() != reflect.String {
			return
		}
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			expandEnv(e, joinPath(path, k.String()), lookup, errs, src)
			v.SetMapIndex(k, e)
		}
	}
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// EnvPrefix starts the name of every environment variable that overrides a
// setting: TOKENBROKER_ and the setting's path in capitals, dots as
// underscores (proxy.timeout is TOKENBROKER_PROXY_TIMEOUT).
const EnvPrefix = "TOKENBROKER_"

// envSettings are the settings the environment can override: every
// top-level setting and every setting of the proxy, refresh, scheduler,
// shutdown and tracing sections. Lists (providers, webhooks) stay in the
// file, where ${VAR} can fill any of their strings.
func envSettings(f *fileConfig) []envSetting {
	str := func(path string, p *string) envSetting {
		return envSetting{path, func(v string) error { *p = v; return nil }}
	}
	integer := func(path string, p *int) envSetting {
		return envSetting{path, func(v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q must be a whole number, like 8", v)
			}
			*p = n
			return nil
		}}
	}
	boolean := func(path string, p *bool) envSetting {
		return envSetting{path, func(v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q must be true or false", v)
			}
			*p = b
			return nil
		}}
	}
	return []envSetting{
		str("listen", &f.Listen),
		str("database", &f.Database),
		str("data_dir", &f.DataDir),
		str("encryption_keys_file", &f.EncryptionKeysFile),
		str("public_url", &f.PublicURL),
		str("log_level", &f.LogLevel),
		str("log_format", &f.LogFormat),
		str("proxy.max_replay_body", &f.Proxy.MaxReplayBody),
		str("proxy.timeout", &f.Proxy.Timeout),
		str("refresh.timeout", &f.Refresh.Timeout),
		str("refresh.lease_ttl", &f.Refresh.LeaseTTL),
		boolean("scheduler.disabled", &f.Scheduler.Disabled),
		str("scheduler.interval", &f.Scheduler.Interval),
		integer("scheduler.concurrency", &f.Scheduler.Concurrency),
		integer("scheduler.batch_size", &f.Scheduler.BatchSize),
		str("shutdown.grace", &f.Shutdown.Grace),
		str("shutdown.drain_delay", &f.Shutdown.DrainDelay),
	}
}

type envSetting struct {
	path string
	set  func(string) error
}

// EnvName is the environment variable that overrides the setting at path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// EnvNames lists every overriding environment variable, for documentation
// and tests.
func EnvNames() []string {
	var f fileConfig
	var out []string
	for _, s := range envSettings(&f) {
		out = append(out, EnvName(s.path))
	}
	return out
}

// applyEnv lays the TOKENBROKER_* variables over the file's values. A
// variable set to the empty string counts as unset.
func applyEnv(f *fileConfig, lookup func(string) (string, bool), src *source) []error {
	var errs []error
	for _, s := range envSettings(f) {
		name := EnvName(s.path)
		v, ok := lookup(name)
		if !ok || v == "" {
			continue
		}
		src.env[s.path] = name
		if err := s.set(v); err != nil {
			errs = append(errs, &fieldError{path: s.path, env: name, problem: err.Error()})
		}
	}
	return errs
}

// closest returns the candidate nearest to s by edit distance when it is
// near enough to be a likely typo, else "".
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	s = strings.ToLower(s)
	for _, c := range slices.Sorted(slices.Values(candidates)) {
		d := editDistance(s, c)
		if strings.HasPrefix(c, s) && len(s) >= 3 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

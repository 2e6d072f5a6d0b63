package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestDocsListEveryKey: docs/config.md has a table row for every key of
// the schema, under a heading that names the key's table, so the reference
// cannot fall behind the code.
func TestDocsListEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	// The rows under each heading: the text up to the next heading.
	rows := map[string]string{}
	var heading string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			heading = line
			continue
		}
		rows[heading] += line + "\n"
	}
	documented := func(table, key string) bool {
		for h, r := range rows {
			named := strings.Contains(h, "`["+table+"]`") || strings.Contains(h, "`[["+table+"]]`")
			if named && strings.Contains(r, "| `"+key+"` |") {
				return true
			}
		}
		return false
	}
	keys := 0
	var walk func(table string, typ reflect.Type)
	walk = func(table string, typ reflect.Type) {
		for f := range typ.Fields() {
			key := f.Tag.Get("toml")
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if isTable(ft) {
				sub := key
				if table != "" {
					sub = table + "." + key
				}
				walk(sub, ft)
				continue
			}
			keys++
			if !documented(table, key) {
				t.Errorf("docs/config.md: no row for %q under a heading naming [%s]", key, table)
			}
		}
	}
	walk("", reflect.TypeFor[rawConfig]())
	if keys < 60 {
		t.Fatalf("only %d keys found in the schema", keys)
	}
}

// isTable reports whether a raw schema type is a TOML table (its fields
// are keys) rather than a value.
func isTable(typ reflect.Type) bool {
	if typ.Kind() != reflect.Struct || typ.NumField() == 0 {
		return false
	}
	for f := range typ.Fields() {
		if f.Tag.Get("toml") == "" {
			return false
		}
	}
	return true
}

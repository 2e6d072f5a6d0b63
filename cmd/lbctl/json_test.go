package main

import (
	"encoding/json"
	"strings"
)

// unmarshalStrict decodes s into v, failing on fields v does not have, so
// that tests notice JSON output drifting from the API's types.
func unmarshalStrict(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Retired marks a key the old resource once documented and no longer uses.
// It is accepted (with a warning) so old pipelines keep working; the struct
// tag `retired:"..."` says what to do instead.
type Retired struct{ set bool }

func (r *Retired) UnmarshalJSON([]byte) error { r.set = true; return nil }

// Set reports whether the request carried the retired key.
func (r Retired) Set() bool { return r.set }

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	retiredType     = reflect.TypeFor[Retired]()
)

// decoder walks a JSON document and a Go value together so that every error
// can name the exact field (source.ca_certs[0].domain) and unknown keys can be
// refused with a suggestion. encoding/json's DisallowUnknownFields names
// neither the level nor a fix.
type decoder struct {
	warnings []string
}

func (d *decoder) decode(path string, raw json.RawMessage, v reflect.Value) error {
	raw = bytes.TrimSpace(raw)
	// null means "not set" at every level: Concourse passes empty vars as null.
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(path, raw, v.Elem())
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return fieldError(path, err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.decodeStruct(path, raw, v)
	case reflect.Slice:
		return d.decodeSlice(path, raw, v)
	case reflect.Map:
		return d.decodeMap(path, raw, v)
	case reflect.String:
		return decodeString(path, raw, v)
	case reflect.Int, reflect.Int64:
		return decodeInt(path, raw, v)
	}
	return fmt.Errorf("%s: unsupported field type %s", path, v.Type())
}

func (d *decoder) decodeSlice(path string, raw json.RawMessage, v reflect.Value) error {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fieldError(path, &typeError{want: "a list", got: jsonKind(raw)})
	}
	s := reflect.MakeSlice(v.Type(), len(items), len(items))
	for i, item := range items {
		if err := d.decode(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i)); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

// decodeMap decodes an object's values in key order, so the first error is
// the same on every run.
func (d *decoder) decodeMap(path string, raw json.RawMessage, v reflect.Value) error {
	var items map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fieldError(path, &typeError{want: "an object", got: jsonKind(raw)})
	}
	m := reflect.MakeMapWithSize(v.Type(), len(items))
	for _, k := range sortedKeys(items) {
		elem := reflect.New(v.Type().Elem()).Elem()
		if err := d.decode(path+"."+k, items[k], elem); err != nil {
			return err
		}
		m.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
	return nil
}

// decodeString also takes numbers verbatim: an unquoted YAML password or
// username of digits arrives as a JSON number.
func decodeString(path string, raw json.RawMessage, v reflect.Value) error {
	var l Literal
	if err := l.UnmarshalJSON(raw); err != nil {
		return fieldError(path, &typeError{want: "a string", got: jsonKind(raw)})
	}
	v.SetString(string(l))
	return nil
}

func decodeInt(path string, raw json.RawMessage, v reflect.Value) error {
	n, err := wholeNumber(raw)
	if err == nil && v.OverflowInt(n) {
		err = &rangeError{text: strconv.FormatInt(n, 10), large: n > 0}
	}
	if err != nil {
		return fieldError(path, err)
	}
	v.SetInt(n)
	return nil
}

func (d *decoder) decodeStruct(path string, raw json.RawMessage, v reflect.Value) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fieldError(path, &typeError{want: "an object", got: jsonKind(raw)})
	}
	fields := map[string]int{}
	var known []string
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = i
		if f.Type != retiredType {
			known = append(known, name)
		}
	}
	for _, key := range sortedKeys(obj) {
		i, ok := fields[key]
		if !ok {
			return unknownKeyError(path, key, known)
		}
		f := v.Type().Field(i)
		if f.Type == retiredType {
			d.warnings = append(d.warnings, fmt.Sprintf("%s.%s is no longer used and is ignored: %s", path, key, f.Tag.Get("retired")))
		}
		if err := d.decode(path+"."+key, obj[key], v.Field(i)); err != nil {
			return err
		}
	}
	return nil
}

// wholeNumber reads an integer given as a JSON number or, since "120" from
// a var is common, as a string holding one.
func wholeNumber(raw json.RawMessage) (int64, error) {
	text := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, &typeError{want: "a whole number", got: jsonKind(raw)}
		}
		text = strings.TrimSpace(s)
	}
	if !integerText.MatchString(text) {
		return 0, &typeError{want: "a whole number", got: jsonKind(raw)}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, &rangeError{text: text, large: text[0] != '-'}
	}
	return n, err
}

var integerText = regexp.MustCompile(`^-?[0-9]+$`)

// rangeError is a whole number that no field can hold. It used to wrap
// around silently (2^63-1 seconds became a negative duration).
type rangeError struct {
	text  string
	large bool
}

func (e *rangeError) Error() string {
	if e.large {
		return fmt.Sprintf("the number %s is too large", e.text)
	}
	return fmt.Sprintf("the number %s is too small", e.text)
}

// FieldError is a decoding or validation error tied to one request field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldError(path string, err error) error {
	var te *typeError
	if errors.As(err, &te) {
		return &FieldError{Field: path, Msg: te.Error()}
	}
	return &FieldError{Field: path, Msg: err.Error()}
}

func unknownKeyError(path, key string, known []string) error {
	where := fmt.Sprintf("unknown %s key %q", path, key)
	if strings.Contains(path, ".") || strings.Contains(path, "[") {
		where = fmt.Sprintf("unknown key %q in %s", key, path)
	}
	if s := suggest(key, known); s != "" {
		return fmt.Errorf("%s — did you mean %q?", where, s)
	}
	sort.Strings(known)
	return fmt.Errorf("%s — known keys are: %s", where, strings.Join(known, ", "))
}

// suggest returns the known key nearest to key when it is close enough to be
// a typo (edit distance at most a third of its length, minimum 2).
func suggest(key string, known []string) string {
	best, bestDist := "", -1
	for _, k := range known {
		d := editDistance(strings.ToLower(key), k)
		if bestDist < 0 || d < bestDist || (d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	limit := max(2, len(key)/3)
	if bestDist >= 0 && bestDist <= limit {
		return best
	}
	// A key that is a word of a known key ("tags" for "additional_tags") is
	// also worth suggesting.
	for _, k := range known {
		if len(key) >= 4 && (strings.Contains(k, key) || strings.Contains(key, k)) {
			return k
		}
	}
	return ""
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and adjacent swaps ("usrename") cost one each.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Literal is a string that may be written in YAML as a number. It keeps the
// number's literal text, so `tag: 1.10` stays "1.10" (Concourse passes YAML
// numbers through as JSON numbers with their original digits).
type Literal string

func (l *Literal) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = Literal(s)
		return nil
	case len(b) > 0 && (b[0] == '-' || (b[0] >= '0' && b[0] <= '9')):
		*l = Literal(b)
		return nil
	}
	return &typeError{want: "a string or a number", got: jsonKind(b)}
}

func (l Literal) String() string { return string(l) }

// Scalar is a build arg or label value: a string, number or boolean, kept as
// text. Objects, arrays and null are refused rather than stringified.
type Scalar string

func (s *Scalar) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "true" || string(b) == "false" {
		*s = Scalar(b)
		return nil
	}
	var l Literal
	if err := l.UnmarshalJSON(b); err != nil {
		return &typeError{want: "a string, number or boolean", got: jsonKind(b)}
	}
	*s = Scalar(l)
	return nil
}

// Bool accepts true/false and the strings "true"/"false". The old resource
// compared strings, so `skip_download: 0` silently meant true; we refuse it.
type Bool bool

func (v *Bool) UnmarshalJSON(b []byte) error {
	switch strings.TrimSpace(string(b)) {
	case "true", `"true"`:
		*v = true
	case "false", `"false"`:
		*v = false
	default:
		return &typeError{want: `true or false`, got: jsonKind(b)}
	}
	return nil
}

// Switch is a Bool that also takes 0 and 1, as the old resource documented
// `docker_buildkit: 1`.
type Switch bool

func (v *Switch) UnmarshalJSON(b []byte) error {
	switch strings.TrimSpace(string(b)) {
	case "true", `"true"`, "1", `"1"`:
		*v = true
	case "false", `"false"`, "0", `"0"`:
		*v = false
	default:
		return &typeError{want: `true, false, 0 or 1`, got: jsonKind(b)}
	}
	return nil
}

// UnmarshalJSON takes a path string or {path, repository, tag}; unknown
// object keys are refused like everywhere else.
func (e *BaseEntry) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		*e = BaseEntry{}
		return json.Unmarshal(b, &e.Path)
	}
	if len(b) == 0 || b[0] != '{' {
		return &typeError{want: "a folder path or an object {path, repository, tag}", got: jsonKind(b)}
	}
	type plain BaseEntry // without this method
	var d decoder
	var out plain
	if err := d.decodeStruct("entry", b, reflect.ValueOf(&out).Elem()); err != nil {
		// The caller adds the field's path (params.load_bases[1]).
		var fe *FieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("%s: %s", strings.TrimPrefix(fe.Field, "entry."), fe.Msg)
		}
		return err
	}
	if out.Path == "" {
		return errors.New("the object form needs path (the folder)")
	}
	if out.Tag != "" && out.Repository == "" {
		return errors.New("tag without repository: give repository too")
	}
	*e = BaseEntry(out)
	return nil
}

// UnmarshalJSON reads a version leniently, as versions come from check
// (ours or the old resource's): keys other than digest and tag (tag
// tracking's, tagtracking.go) are ignored. But a digest that is not a
// string is named as such: {"digest": 5} used to be called "not an object".
func (v *Version) UnmarshalJSON(b []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return &typeError{want: `an object like {"digest": "sha256:..."}`, got: jsonKind(b)}
	}
	*v = Version{}
	raw, ok := obj["digest"]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, &v.Digest); err != nil {
		return &FieldError{Field: "version.digest", Msg: (&typeError{want: "a string", got: jsonKind(raw)}).Error()}
	}
	if raw, ok := obj["tag"]; ok && string(bytes.TrimSpace(raw)) != "null" {
		if err := json.Unmarshal(raw, &v.Tag); err != nil {
			return &FieldError{Field: "version.tag", Msg: (&typeError{want: "a string", got: jsonKind(raw)}).Error()}
		}
	}
	return nil
}

// typeError is what leaf decoders return; the strict decoder adds the path.
type typeError struct {
	want string
	got  string
}

func (e *typeError) Error() string { return fmt.Sprintf("expected %s, got %s", e.want, e.got) }

// jsonKind describes a raw JSON value for error messages without echoing it
// (it could be a secret).
func jsonKind(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "a list"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "the number " + string(b)
	}
}

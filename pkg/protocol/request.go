package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// Parsed carries a decoded request and the warnings decoding produced
// (retired keys, unexpected top-level keys), for the command to log.
type Parsed[T any] struct {
	Request  T
	Warnings []string
}

// ParseCheck reads and validates a check request.
func ParseCheck(r io.Reader) (Parsed[CheckRequest], error) {
	p, err := parse[CheckRequest](r, "source", "version")
	if err != nil {
		return p, err
	}
	if err := p.Request.Source.Validate(); err != nil {
		return p, err
	}
	if v := p.Request.Version; v != nil && v.Digest != "" {
		if err := validateDigest("version.digest", v.Digest); err != nil {
			return p, err
		}
	}
	return p, nil
}

// ParseIn reads and validates a get request.
func ParseIn(r io.Reader) (Parsed[InRequest], error) {
	p, err := parse[InRequest](r, "source", "version", "params")
	if err != nil {
		return p, err
	}
	req := &p.Request
	if err := req.Source.Validate(); err != nil {
		return p, err
	}
	if req.Version == nil || req.Version.Digest == "" {
		return p, errors.New(`version.digest is required: a get needs the version check reported, e.g. {"version": {"digest": "sha256:..."}}`)
	}
	if err := validateDigest("version.digest", req.Version.Digest); err != nil {
		return p, err
	}
	if err := req.Params.Platform.validate("params.platform"); err != nil {
		return p, err
	}
	if err := req.Params.validatePlatforms(); err != nil {
		return p, err
	}
	return p, nil
}

// ParseOut reads and validates a put request. Checks that need SRC (files,
// folders) belong to the put itself.
func ParseOut(r io.Reader) (Parsed[OutRequest], error) {
	p, err := parse[OutRequest](r, "source", "params")
	if err != nil {
		return p, err
	}
	if err := p.Request.Source.Validate(); err != nil {
		return p, err
	}
	return p, p.Request.Params.Validate()
}

func parse[T any](r io.Reader, sections ...string) (Parsed[T], error) {
	var p Parsed[T]
	data, err := io.ReadAll(r)
	if err != nil {
		return p, fmt.Errorf("read request from stdin: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return p, errors.New(`no request on stdin: expected a JSON object such as {"source": {"repository": "..."}}`)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return p, fmt.Errorf("malformed request on stdin: %s", describeJSONError(data, err))
	}
	if top == nil {
		return p, errors.New(`malformed request on stdin: expected a JSON object, got null`)
	}
	// Concourse owns the top level; an unknown key there is its business, not
	// a user typo, so it is only worth a warning.
	allowed := map[string]bool{}
	for _, s := range sections {
		allowed[s] = true
	}
	for _, k := range sortedKeys(top) {
		if !allowed[k] {
			p.Warnings = append(p.Warnings, fmt.Sprintf("ignoring unexpected top-level request key %q", k))
		}
	}
	d := &decoder{}
	v := reflect.ValueOf(&p.Request).Elem()
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Tag.Get("json")
		raw, ok := top[name]
		if !ok {
			continue
		}
		if name == "version" {
			// Versions come from check (ours or the old resource's); be
			// lenient about their shape beyond the digest.
			if err := json.Unmarshal(raw, v.Field(i).Addr().Interface()); err != nil {
				var fe *FieldError
				if errors.As(err, &fe) {
					return p, fe
				}
				return p, fmt.Errorf("version: expected an object like {\"digest\": \"sha256:...\"}, got %s", jsonKind(raw))
			}
			continue
		}
		if err := d.decode(name, raw, v.Field(i)); err != nil {
			return p, err
		}
	}
	p.Warnings = append(p.Warnings, d.warnings...)
	return p, nil
}

// describeJSONError says where the JSON broke without quoting it: the
// request holds passwords.
func describeJSONError(data []byte, err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		line, col := position(data, syn.Offset)
		return fmt.Sprintf("invalid JSON at line %d, column %d (%s)", line, col, syn.Error())
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Sprintf("expected a JSON object, got %s", typ.Value)
	}
	return err.Error()
}

func position(data []byte, offset int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < offset && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

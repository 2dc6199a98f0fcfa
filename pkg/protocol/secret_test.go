package protocol

import (
	"fmt"
	"strings"
	"testing"
)

// TestSecretForms: exactly one of value, source and env; the value is never
// quoted in an error or by %v.
func TestSecretForms(t *testing.T) {
	const v = "s3cr3t-value-5d1e"
	parse := func(sec string) (*OutRequest, error) {
		p, err := ParseOut(strings.NewReader(`{"source":{"repository":"a"},"params":{"build":"b","secrets":{"tok":` + sec + `}}}`))
		if err != nil {
			return nil, err
		}
		return &p.Request, nil
	}
	req, err := parse(`{"value":"` + v + `\n"}`)
	if err != nil || req.Params.Secrets["tok"].Value != v+"\n" {
		t.Fatalf("value form: %v %+v", err, req)
	}
	if s := fmt.Sprintf("%v %+v %#v", req.Params.Secrets, req.Params.Secrets["tok"], req.Params.Secrets["tok"]); strings.Contains(s, v) {
		t.Errorf("%%v shows the value: %s", s)
	}
	// A number from an unquoted YAML value is kept verbatim.
	if req, err := parse(`{"value":123.50}`); err != nil || req.Params.Secrets["tok"].Value != "123.50" {
		t.Errorf("numeric value: %v %+v", err, req)
	}
	for _, bad := range []string{`{}`, `{"value":""}`, `{"value":null}`, `{"value":"` + v + `","source":"f"}`, `{"value":"` + v + `","env":"E"}`, `{"env":"E","source":"f"}`} {
		_, err := parse(bad)
		if err == nil || !strings.Contains(err.Error(), "params.secrets.tok: set exactly one of value") || strings.Contains(err.Error(), v) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := parse(`{"value":{"` + v + `":1}}`); err == nil || strings.Contains(err.Error(), v) || !strings.Contains(err.Error(), "params.secrets.tok.value") {
		t.Errorf("object value: %v", err)
	}
}

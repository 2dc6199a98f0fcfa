package engine

import (
	"fmt"
	"strings"
	"testing"
)

// A build secret never shows its value when printed, alone or inside
// BuildOptions (an error or a debug line that prints the options), whatever
// the verb.
func TestSecretNeverPrintsItsValue(t *testing.T) {
	const v = "s3cr3t-build-value-91c4"
	s := Secret{ID: "npm", Value: []byte(v)}
	o := BuildOptions{ContextDir: "ctx", Secrets: []Secret{s}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, x := range []any{s, &s, o, &o, o.Secrets} {
			if got := fmt.Sprintf(verb, x); strings.Contains(got, v) || strings.Contains(got, fmt.Sprint([]byte(v))) {
				t.Errorf("%s of %T shows the value: %s", verb, x, got)
			}
		}
	}
	if got, want := fmt.Sprint(s), "{ID:npm Value:***}"; got != want {
		t.Errorf("Secret prints as %q, want %q", got, want)
	}
}

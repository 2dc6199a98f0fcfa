package engine

import "fmt"

// Secret is a BuildKit build secret, read by RUN --mount=type=secret,id=ID.
// The value is read before the daemon starts, so a missing variable or file
// fails early and the value can be masked in logs.
type Secret struct {
	ID    string
	Value []byte
}

// String never shows the value.
func (s Secret) String() string { return fmt.Sprintf("{ID:%s Value:***}", s.ID) }

// GoString is String for %#v.
func (s Secret) GoString() string { return s.String() }

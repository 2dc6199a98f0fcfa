package protocol

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestReadmeDocumentsEveryField keeps the manual honest: every key the
// request types accept (retired ones included, in the migration section)
// must appear in README.md as `key`.
func TestReadmeDocumentsEveryField(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	seen := map[reflect.Type]bool{}
	var walk func(path string, typ reflect.Type)
	walk = func(path string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ == retiredType {
			return
		}
		seen[typ] = true
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if key == "" || key == "-" {
				continue
			}
			if !strings.Contains(readme, "`"+key+"`") && !strings.Contains(readme, "`"+key+":") && !strings.Contains(readme, "."+key+"`") {
				t.Errorf("README.md does not document %s.%s", path, key)
			}
			walk(path+"."+key, f.Type)
		}
	}
	walk("source", reflect.TypeFor[Source]())
	walk("params(get)", reflect.TypeFor[InParams]())
	walk("params(put)", reflect.TypeFor[OutParams]())
}

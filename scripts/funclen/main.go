// Command funclen lists the longest functions under the given folders, in
// lines from `func` to the closing brace, test files included:
//
//	go run ./scripts/funclen [-top N] [-over N] dir...
//
// It is gocyclo's companion in `make metrics`: complexity and length are the
// two numbers a reviewer asks about a function.
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type function struct {
	lines int
	name  string
	pos   string
}

func main() {
	top := flag.Int("top", 0, "show only the N longest (0: all)")
	over := flag.Int("over", 0, "show only functions longer than N lines")
	flag.Parse()
	var all []function
	for _, root := range flag.Args() {
		fns, err := functions(root)
		if err != nil {
			fmt.Fprintln(os.Stderr, "funclen:", err)
			os.Exit(1)
		}
		all = append(all, fns...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].lines > all[j].lines })
	for i, f := range all {
		if (*top > 0 && i >= *top) || f.lines <= *over {
			break
		}
		fmt.Printf("%d %s %s\n", f.lines, f.name, f.pos)
	}
}

func functions(root string) ([]function, error) {
	fset := token.NewFileSet()
	var out []function
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
			out = append(out, function{end.Line - start.Line + 1, name(fd), fmt.Sprintf("%s:%d", p, start.Line)})
		}
		return nil
	})
	return out, err
}

// name is Recv.Name for methods, as gocyclo writes them.
func name(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if st, ok := t.(*ast.StarExpr); ok {
		t = st.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return "(" + id.Name + ")." + fd.Name.Name
	}
	return fd.Name.Name
}

module github.com/ampmux/ampmux

go 1.26

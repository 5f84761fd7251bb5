// Package eos is not built yet.
package eos

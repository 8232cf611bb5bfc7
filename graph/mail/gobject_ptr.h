// RAII holders for what GMime and GLib hand out: GObjects (released with g_object_unref) and
// g_malloc'ed strings (g_free). Internal to graph/mail, for the files that talk to GMime.
#pragma once

#include <glib-object.h>

#include <memory>

namespace gb::mail {

struct ObjectUnref {
    void operator()(gpointer p) const {
        if (p) g_object_unref(p);
    }
};
template <class T>
using GPtr = std::unique_ptr<T, ObjectUnref>;

struct GFree {
    void operator()(gpointer p) const { g_free(p); }
};
using GCharPtr = std::unique_ptr<char, GFree>;

}  // namespace gb::mail

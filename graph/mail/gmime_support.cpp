// GMime 3 wrappers (see gmime_support.h). Every GObject and every g_malloc'ed string is released through
// the small RAII holders of gobject_ptr.h.
#include "graph/mail/gmime_support.h"

#include <gmime/gmime.h>

#include <cstdlib>
#include <memory>
#include <mutex>

#include "common/ascii.h"
#include "graph/mail/gobject_ptr.h"

namespace gb::mail {

namespace {

using ascii::lower;

// CR and LF removed: a folded header value becomes its unfolded form (continuations start with WSP).
std::string unfold(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value)
        if (c != '\r' && c != '\n') out.push_back(c);
    return out;
}

void collect(InternetAddressList* list, std::vector<Address>& out, std::size_t max, bool& overflow,
             int depth) {
    if (!list) return;
    int n = internet_address_list_length(list);
    for (int i = 0; i < n && !overflow; ++i) {
        InternetAddress* ia = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            if (depth < 2)
                collect(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, max, overflow,
                        depth + 1);
            continue;
        }
        if (!INTERNET_ADDRESS_IS_MAILBOX(ia)) continue;
        const char* addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
        if (!addr || std::string_view(addr).find('@') == std::string_view::npos) continue;
        if (out.size() >= max) {
            overflow = true;
            return;
        }
        const char* name = internet_address_get_name(ia);
        out.push_back(Address{name ? name : "", addr});
    }
}

std::string byte_array_string(GMimeStream* mem) {
    GByteArray* arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
    if (!arr || arr->len == 0) return {};
    return std::string(reinterpret_cast<const char*>(arr->data), arr->len);
}

DecodedPart decode_part_object(GMimePart* part) {
    DecodedPart d;
    GMimeObject* obj = GMIME_OBJECT(part);
    if (GMimeContentType* ct = g_mime_object_get_content_type(obj)) {
        GCharPtr mt(g_mime_content_type_get_mime_type(ct));
        if (mt) d.content_type = lower(mt.get());
    }
    if (const char* fn = g_mime_part_get_filename(part)) d.filename = fn;
    if (const char* cid = g_mime_object_get_content_id(obj)) d.content_id = cid;
    if (GMimeContentDisposition* cd = g_mime_object_get_content_disposition(obj)) {
        d.disposition_attachment = g_mime_content_disposition_is_attachment(cd);
        const char* disp = g_mime_content_disposition_get_disposition(cd);
        d.disposition_inline = disp && lower(disp) == "inline";
    }
    if (GMimeDataWrapper* content = g_mime_part_get_content(part)) {
        GPtr<GMimeStream> mem(g_mime_stream_mem_new());
        g_mime_data_wrapper_write_to_stream(content, mem.get());
        d.bytes = byte_array_string(mem.get());
    }
    return d;
}

bool walk(GMimeObject* obj, std::vector<DecodedPart>& out, std::size_t max_parts, int depth, int max_depth) {
    if (!obj || depth > max_depth) return false;
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart* mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n; ++i)
            if (!walk(g_mime_multipart_get_part(mp, i), out, max_parts, depth + 1, max_depth)) return false;
        return true;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) return true;  // an attached message is not descended into
    if (!GMIME_IS_PART(obj)) return true;
    if (out.size() >= max_parts) return false;
    out.push_back(decode_part_object(GMIME_PART(obj)));
    return true;
}

}  // namespace

void ensure_gmime() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_mime_init();
        // GObject creates a type's class on first use, published with GLib's own (uninstrumented)
        // atomics. Creating the classes the MIME code instantiates here, inside call_once, orders that
        // before every other thread's use in a way ThreadSanitizer can see as well.
        for (GType t : {internet_address_list_get_type(), internet_address_mailbox_get_type(),
                        internet_address_group_get_type(), g_mime_message_get_type(), g_mime_part_get_type(),
                        g_mime_text_part_get_type(), g_mime_multipart_get_type(), g_mime_message_part_get_type(),
                        g_mime_parser_get_type(), g_mime_stream_mem_get_type(), g_mime_stream_filter_get_type(),
                        g_mime_filter_charset_get_type(), g_mime_data_wrapper_get_type(),
                        g_mime_header_list_get_type(), g_mime_content_type_get_type(),
                        g_mime_content_disposition_get_type(), g_mime_param_list_get_type(),
                        g_mime_filter_basic_get_type(), g_mime_filter_unix2dos_get_type(),
                        g_mime_filter_dos2unix_get_type(), g_mime_stream_null_get_type()})
            if (G_TYPE_IS_CLASSED(t)) g_type_class_ref(t);
        std::atexit([] { g_mime_shutdown(); });
    });
}

std::optional<std::vector<Address>> parse_address_list(std::string_view value, std::size_t max_addresses) {
    ensure_gmime();
    std::string v = unfold(value);
    std::vector<Address> out;
    GPtr<InternetAddressList> list(internet_address_list_parse(nullptr, v.c_str()));
    bool overflow = false;
    collect(list.get(), out, max_addresses, overflow, 0);
    if (overflow) return std::nullopt;
    return out;
}

std::string format_address(const Address& a) {
    if (a.name.empty()) return "<" + a.address + ">";
    ensure_gmime();
    GPtr<InternetAddress> ia(internet_address_mailbox_new(a.name.c_str(), a.address.c_str()));
    GCharPtr s(internet_address_to_string(ia.get(), nullptr, TRUE));
    return s ? std::string(s.get()) : "<" + a.address + ">";
}

ContentType parse_content_type(std::string_view value) {
    ensure_gmime();
    ContentType out;
    std::string v = unfold(value);
    GPtr<GMimeContentType> ct(g_mime_content_type_parse(nullptr, v.c_str()));
    if (!ct) return out;
    GCharPtr mt(g_mime_content_type_get_mime_type(ct.get()));
    if (mt) out.mime_type = lower(mt.get());
    if (const char* b = g_mime_content_type_get_parameter(ct.get(), "boundary")) out.boundary = b;
    if (const char* c = g_mime_content_type_get_parameter(ct.get(), "charset")) out.charset = c;
    if (const char* n = g_mime_content_type_get_parameter(ct.get(), "name")) out.name = n;
    return out;
}

std::optional<DecodedPart> decode_leaf(std::string_view part_bytes) {
    ensure_gmime();
    GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(part_bytes.data(), part_bytes.size()));
    GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    GPtr<GMimeObject> obj(g_mime_parser_construct_part(parser.get(), nullptr));
    if (!obj || !GMIME_IS_PART(obj.get())) return std::nullopt;
    return decode_part_object(GMIME_PART(obj.get()));
}

std::optional<std::vector<DecodedPart>> decode_parts(std::string_view message, std::size_t max_parts,
                                                     int max_depth) {
    ensure_gmime();
    GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(message.data(), message.size()));
    GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    GPtr<GMimeMessage> msg(g_mime_parser_construct_message(parser.get(), nullptr));
    if (!msg) return std::nullopt;
    std::vector<DecodedPart> out;
    if (!walk(g_mime_message_get_mime_part(msg.get()), out, max_parts, 0, max_depth)) return std::nullopt;
    return out;
}

}  // namespace gb::mail

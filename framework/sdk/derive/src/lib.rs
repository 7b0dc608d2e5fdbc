//! Derive macros of the clef plugin SDK, re-exported by `clef-sdk`; see `clef_sdk::HParams`
//! and `clef_sdk::HParamChoice` for what they generate and the attributes they read.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::quote;
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, Data, DeriveInput, Expr, ExprLit, ExprRange, Fields, Lit, LitStr,
    RangeLimits, Type,
};

/// `#[derive(HParams)]` on a struct with named fields: one hyperparameter per field.
#[proc_macro_derive(HParams, attributes(hparam))]
pub fn derive_hparams(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    hparams(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// `#[derive(HParamChoice)]` on an enum of unit variants.
#[proc_macro_derive(HParamChoice, attributes(choice))]
pub fn derive_choice(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    choice(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The doc comment of an item, joined into one line.
fn doc_of(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
            {
                lines.push(s.value().trim().to_owned());
            }
        }
    }
    lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `#[hparam(...)]` says about one field.
#[derive(Default)]
struct FieldAttrs {
    default: Option<Expr>,
    range: Option<ExprRange>,
    log: bool,
    needs_past_tasks: bool,
    choices: Option<Expr>,
}

fn field_attrs(field: &syn::Field) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    for a in &field.attrs {
        if !a.path().is_ident("hparam") {
            continue;
        }
        a.parse_nested_meta(|meta| {
            if meta.path.is_ident("default") {
                out.default = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("range") {
                out.range = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("log") {
                out.log = true;
            } else if meta.path.is_ident("needs_past_tasks") {
                out.needs_past_tasks = true;
            } else if meta.path.is_ident("choices") {
                out.choices = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error(
                    "unknown hparam attribute (expected default, range, log, \
                     needs_past_tasks or choices)",
                ));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// The kind of a field, from its type's last path segment.
enum Kind {
    Float,
    Int,
    Bool,
    Text,
    Choice,
}

fn kind_of(ty: &Type) -> Kind {
    let Type::Path(p) = ty else {
        return Kind::Choice;
    };
    let Some(last) = p.path.segments.last() else {
        return Kind::Choice;
    };
    match last.ident.to_string().as_str() {
        "f64" | "f32" => Kind::Float,
        "i64" | "i32" | "u64" | "u32" | "usize" | "u16" | "i16" | "u8" | "i8" => Kind::Int,
        "bool" => Kind::Bool,
        "String" => Kind::Text,
        _ => Kind::Choice,
    }
}

/// A range bound as an `f64` (floats) or `i64` (ints) expression; `None` = unbounded.
fn bound(e: Option<&Expr>, int: bool, unbounded: Tokens) -> Tokens {
    match (e, int) {
        (Some(e), false) => quote!((#e) as f64),
        (Some(e), true) => quote!((#e) as i64),
        (None, _) => unbounded,
    }
}

fn hparams(input: &DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.span(),
            "HParams derives on a struct with named fields",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new(
            input.span(),
            "HParams derives on a struct with named fields",
        ));
    };
    let mut schema = Vec::new();
    let mut build = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let key = ident.to_string();
        let key = key.strip_prefix("r#").unwrap_or(&key).to_owned();
        let doc = doc_of(&field.attrs);
        let attrs = field_attrs(field)?;
        let ty = &field.ty;
        let Some(default) = &attrs.default else {
            return Err(syn::Error::new(
                field.span(),
                format!("hyperparameter `{key}` needs #[hparam(default = ...)]"),
            ));
        };
        let kind = kind_of(ty);
        let numeric = matches!(kind, Kind::Float | Kind::Int);
        if attrs.range.is_some() && !numeric {
            return Err(syn::Error::new(
                field.span(),
                format!("hyperparameter `{key}`: `range` is for float and integer fields"),
            ));
        }
        if attrs.log && !numeric {
            return Err(syn::Error::new(
                field.span(),
                format!("hyperparameter `{key}`: `log` is for float and integer fields"),
            ));
        }
        if attrs.choices.is_some() && !matches!(kind, Kind::Text) {
            return Err(syn::Error::new(
                field.span(),
                format!("hyperparameter `{key}`: `choices` is for String fields (an enum deriving HParamChoice lists its own)"),
            ));
        }
        let (lo, hi) = match &attrs.range {
            Some(r) => {
                if matches!(r.limits, RangeLimits::HalfOpen(_)) && r.end.is_some() {
                    return Err(syn::Error::new(
                        r.span(),
                        "use an inclusive range `a..=b` (bounds are inclusive)",
                    ));
                }
                (r.start.as_deref(), r.end.as_deref())
            }
            None => (None, None),
        };
        let entry = match kind {
            Kind::Float => {
                let lo = bound(lo, false, quote!(f64::NEG_INFINITY));
                let hi = bound(hi, false, quote!(f64::INFINITY));
                build.push(quote!(#ident: values.float(#key)? as #ty));
                quote!(::clef_sdk::HParam::float(#key, (#default) as f64, #lo, #hi, #doc))
            }
            Kind::Int => {
                // Unsigned types start at 0 unless a range says otherwise.
                let unsigned =
                    matches!(&kind_of(ty), Kind::Int) && quote!(#ty).to_string().starts_with('u');
                let lo_default = if unsigned {
                    quote!(0i64)
                } else {
                    quote!(i64::MIN)
                };
                let lo = bound(lo, true, lo_default);
                let hi = bound(hi, true, quote!(i64::MAX));
                build.push(quote!(#ident: values.int::<#ty>(#key)?));
                quote!(::clef_sdk::HParam::int(#key, (#default) as i64, #lo, #hi, #doc))
            }
            Kind::Bool => {
                build.push(quote!(#ident: values.bool(#key)?));
                quote!(::clef_sdk::HParam::bool(#key, #default, #doc))
            }
            Kind::Text => {
                let Some(choices) = &attrs.choices else {
                    return Err(syn::Error::new(
                        field.span(),
                        format!(
                            "hyperparameter `{key}`: a String needs #[hparam(choices = [...])]"
                        ),
                    ));
                };
                build.push(quote!(#ident: values.choice(#key)?.to_owned()));
                // An array literal, or a path to a `&[&str]` constant.
                let choices = match choices {
                    Expr::Array(a) => quote!(&#a),
                    other => quote!(#other),
                };
                quote!(::clef_sdk::HParam::choice(#key, #default, #choices, #doc))
            }
            Kind::Choice => {
                build.push(quote!(#ident: values.choice_of::<#ty>(#key)?));
                quote!(::clef_sdk::HParam::choice(
                    #key,
                    #default,
                    <#ty as ::clef_sdk::HParamChoice>::CHOICES,
                    #doc
                ))
            }
        };
        let entry = if attrs.log {
            quote!(#entry.log_scale())
        } else {
            entry
        };
        let entry = if attrs.needs_past_tasks {
            quote!(#entry.needs_past_tasks())
        } else {
            entry
        };
        schema.push(entry);
    }
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::clef_sdk::HParams for #name #ty_generics #where_clause {
            fn schema() -> ::std::vec::Vec<::clef_sdk::HParam> {
                ::std::vec![#(#schema),*]
            }

            fn from_values(values: &::clef_sdk::Values) -> ::clef_sdk::Result<Self> {
                ::core::result::Result::Ok(Self { #(#build),* })
            }
        }
    })
}

/// `PerTask` → `per-task`.
fn kebab(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

fn choice(input: &DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new(
            input.span(),
            "HParamChoice derives on an enum of unit variants",
        ));
    };
    let mut names = Vec::new();
    let mut variants = Vec::new();
    for v in &data.variants {
        if !matches!(v.fields, Fields::Unit) {
            return Err(syn::Error::new(
                v.span(),
                "HParamChoice variants must be unit variants",
            ));
        }
        let mut rename = None;
        for a in &v.attrs {
            if a.path().is_ident("choice") {
                a.parse_nested_meta(|meta| {
                    if meta.path.is_ident("name") {
                        rename = Some(meta.value()?.parse::<LitStr>()?.value());
                        Ok(())
                    } else {
                        Err(meta.error("unknown choice attribute (expected name = \"...\")"))
                    }
                })?;
            }
        }
        let ident = &v.ident;
        names.push(LitStr::new(
            &rename.unwrap_or_else(|| kebab(&ident.to_string())),
            Span::call_site(),
        ));
        variants.push(ident.clone());
    }
    Ok(quote! {
        impl ::clef_sdk::HParamChoice for #name {
            const CHOICES: &'static [&'static str] = &[#(#names),*];

            fn from_choice(name: &str) -> ::core::option::Option<Self> {
                match name {
                    #(#names => ::core::option::Option::Some(Self::#variants),)*
                    _ => ::core::option::Option::None,
                }
            }

            fn choice_name(&self) -> &'static str {
                match self {
                    #(Self::#variants => #names,)*
                }
            }
        }
    })
}

//! One decoder for every record layout the service reads.
//!
//! The layouts in the wild differ in where the country sits:
//! MaxMind/DB-IP nest it (`country.iso_code`, `registered_country`,
//! `continent.code`, `names.en`), ip-location-db keeps a flat
//! `country_code`, IPinfo lite has a flat `country_code` beside a `country`
//! *string* and an `asn` string like `"AS15169"`, and ASN databases carry
//! `autonomous_system_number`. [`RawRecord`] reads all of them in one pass,
//! borrowing strings from the database, so no layout has to be known before
//! a lookup.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
};

/// The fields of one MMDB record that the service uses, in any layout.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRecord<'a> {
    #[serde(borrow)]
    pub country: Option<Place<'a>>,
    #[serde(borrow)]
    pub registered_country: Option<Place<'a>>,
    #[serde(borrow)]
    pub continent: Option<Place<'a>>,
    #[serde(borrow)]
    pub country_code: Option<&'a str>,
    #[serde(borrow)]
    pub continent_code: Option<&'a str>,
    pub autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    pub autonomous_system_organization: Option<&'a str>,
    /// IPinfo lite: `"AS15169"`; some files store the bare number.
    #[serde(borrow)]
    pub asn: Option<AsnField<'a>>,
    /// IPinfo lite's AS organisation.
    #[serde(borrow)]
    pub as_name: Option<&'a str>,
}

/// A country or continent: a nested map (MaxMind) or a bare English name
/// (IPinfo lite's `country` and `continent`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place<'a> {
    /// `iso_code` for countries, `code` for continents.
    pub code: Option<&'a str>,
    /// `names.en`, or the bare string.
    pub name: Option<&'a str>,
}

/// `asn` as IPinfo writes it (`"AS15169"`) or as a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AsnField<'a> {
    Text(&'a str),
    Number(u64),
}

impl AsnField<'_> {
    /// The AS number, if the field holds one.
    pub fn number(self) -> Option<u32> {
        match self {
            AsnField::Number(n) => u32::try_from(n).ok(),
            AsnField::Text(text) => {
                let digits = text.strip_prefix("AS").or_else(|| text.strip_prefix("as")).unwrap_or(text);
                digits.parse().ok()
            }
        }
    }
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow)]
    en: Option<&'a str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Place<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PlaceVisitor;

        impl<'de> Visitor<'de> for PlaceVisitor {
            type Value = Place<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with iso_code/code and names, or a name")
            }

            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(Place { code: None, name: Some(name) })
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut place = Place::default();
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "iso_code" | "code" => place.code = Some(map.next_value()?),
                        "names" => place.name = map.next_value::<Names<'de>>()?.en,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(place)
            }
        }

        deserializer.deserialize_any(PlaceVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for AsnField<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AsnVisitor;

        impl<'de> Visitor<'de> for AsnVisitor {
            type Value = AsnField<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number or a string like \"AS15169\"")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(AsnField::Text(text))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(AsnField::Number(n))
            }

            fn visit_u32<E: de::Error>(self, n: u32) -> Result<Self::Value, E> {
                Ok(AsnField::Number(n.into()))
            }

            fn visit_u16<E: de::Error>(self, n: u16) -> Result<Self::Value, E> {
                Ok(AsnField::Number(n.into()))
            }
        }

        deserializer.deserialize_any(AsnVisitor)
    }
}

impl<'a> RawRecord<'a> {
    /// The country per DESIGN.md: `country.iso_code`, else
    /// `registered_country.iso_code`, else the flat `country_code`. The name
    /// travels with the code it belongs to.
    pub fn country(&self) -> Option<Place<'a>> {
        let nested = |p: Option<Place<'a>>| p.filter(|p| p.code.is_some());
        if let Some(place) = nested(self.country) {
            return Some(place);
        }
        if let Some(place) = nested(self.registered_country) {
            return Some(place);
        }
        self.country_code.map(|code| Place {
            code: Some(code),
            // IPinfo lite: `country` is the bare English name.
            name: self.country.and_then(|p| p.name),
        })
    }

    /// The continent code and name from `continent` or `continent_code`.
    pub fn continent(&self) -> Option<Place<'a>> {
        match (self.continent, self.continent_code) {
            (Some(p), _) if p.code.is_some() => Some(p),
            (p, Some(code)) => Some(Place { code: Some(code), name: p.and_then(|p| p.name) }),
            (p, None) => p,
        }
    }

    /// The AS number and organisation, from either ASN layout.
    pub fn asn(&self) -> (Option<u32>, Option<&'a str>) {
        let number = self.autonomous_system_number.or_else(|| self.asn.and_then(AsnField::number));
        let org = self.autonomous_system_organization.or(self.as_name);
        (number, org)
    }
}

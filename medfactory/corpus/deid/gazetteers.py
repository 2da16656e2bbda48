"""Name and place lists of Spain and Brazil for the CRF's gazetteer features, read from Faker's providers.

Faker (MIT licence) ships its locale data as class attributes of its provider modules, so the lists
are read there without building a ``Faker()`` instance. Faker has no list of Brazilian cities (its
pt_BR provider builds city names from surnames), so the state capitals are listed here.
Every list is case-folded, so membership is tested with ``word.casefold()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

# The 27 capitals of Brazil's states and federal district: the cities a Brazilian note names most.
BRAZILIAN_CAPITALS: tuple[str, ...] = (
    "Aracaju", "Belém", "Belo Horizonte", "Boa Vista", "Brasília", "Campo Grande", "Cuiabá", "Curitiba",
    "Florianópolis", "Fortaleza", "Goiânia", "João Pessoa", "Macapá", "Maceió", "Manaus", "Natal", "Palmas",
    "Porto Alegre", "Porto Velho", "Recife", "Rio Branco", "Rio de Janeiro", "Salvador", "São Luís", "São Paulo",
    "Teresina", "Vitória",
)  # fmt: skip
# Short function words that appear inside multi-word names ("Rio de Janeiro"); never gazetteer words alone.
_CONNECTORS = frozenset({"de", "del", "la", "las", "los", "do", "da", "dos", "das", "e", "y", "i"})


def _words(values: Iterable[str]) -> frozenset[str]:
    """Every case-folded word of ``values`` (multi-word names contribute each word), connectors left out."""
    words: set[str] = set()
    for value in values:
        for word in value.replace("-", " ").split():
            folded = word.casefold()
            if len(folded) > 1 and folded not in _CONNECTORS:
                words.add(folded)
    return frozenset(words)


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Case-folded first names of es_ES and pt_BR."""
    from faker.providers.person import es_ES, pt_BR

    return _words((*es_ES.Provider.first_names, *pt_BR.Provider.first_names))


@lru_cache(maxsize=1)
def surnames() -> frozenset[str]:
    """Case-folded surnames of es_ES and pt_BR."""
    from faker.providers.person import es_ES, pt_BR

    return _words((*es_ES.Provider.last_names, *pt_BR.Provider.last_names))


@lru_cache(maxsize=1)
def places() -> frozenset[str]:
    """Case-folded words of Spanish provinces and regions, Brazilian states, capitals and neighbourhoods, Portuguese cities, countries (es, pt)."""
    from faker.providers.address import es, es_ES, pt_BR, pt_PT

    brazil_states = (name for _, name in pt_BR.Provider.estados)
    return _words(
        (
            *es_ES.Provider.states, *es_ES.Provider.regions, *es.Provider.countries, *brazil_states, *BRAZILIAN_CAPITALS,
            *pt_BR.Provider.bairros, *pt_BR.Provider.countries, *pt_PT.Provider.cities,
        )
    )  # fmt: skip


@lru_cache(maxsize=1)
def brazilian_places() -> tuple[tuple[str, str], ...]:
    """(city, state abbreviation) pairs for planting: the capitals with their states."""
    states = ("SE", "PA", "MG", "RR", "DF", "MS", "MT", "PR", "SC", "CE", "GO", "PB", "AP", "AL", "AM", "RN", "TO",
              "RS", "RO", "PE", "AC", "RJ", "BA", "MA", "SP", "PI", "ES")  # fmt: skip
    return tuple(zip(BRAZILIAN_CAPITALS, states, strict=True))

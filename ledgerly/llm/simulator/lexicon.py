"""What the simulated model knows of words: help-center synonyms and other languages' billing words.

A small real model reads "hang on to our data" as "keep the data" and "Erstattung" as "refund";
the simulator needs that much to find the passage sentence that answers a question. The tables
are written from the help center's own vocabulary (plans, prices, seats, invoices, refunds,
payments, VAT, cancelling, data, support) and from ordinary ways customers say those things,
not from any test's questions. All keys are lower case without accents (see language.fold).
"""

from __future__ import annotations

import re

# An asked word -> the words a passage may use for it (the asked word always counts too).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "long": ("day", "days", "week", "month", "within", "business"),
    "time": ("day", "days", "week", "month", "within", "business"),
    "soon": ("day", "days", "immediately", "once", "within"),
    "often": ("day", "days", "every", "retry"),
    "cost": ("price", "costs", "$", "€", "£", "pay"),
    "price": ("cost", "costs", "$", "€", "£"),
    "pricing": ("price", "cost", "$"),
    "fee": ("price", "cost", "$"),
    "cheap": ("price", "cost", "costs", "$"),
    "cheapest": ("price", "cost", "costs", "$"),
    "expensive": ("price", "cost", "costs", "$"),
    "money": ("refund", "refunded", "price"),
    "reimburse": ("refund", "refunded"),
    "reimbursement": ("refund", "refunded"),
    "refund": ("refunded", "refundable"),
    "bill": ("invoice", "charge", "billing", "charged"),
    "billed": ("invoice", "charge", "charged", "billing"),
    "billing": ("invoice", "billed"),
    "charged": ("charge", "billed"),
    "twice": ("duplicate", "double"),
    "duplicate": ("twice", "double"),
    "double": ("duplicate", "twice"),
    "pay": ("payment", "paid", "paying"),
    "paid": ("pay", "payment", "price", "cost"),
    "paying": ("pay", "payment", "paid"),
    "payment": ("pay", "paid"),
    "card": ("visa", "mastercard", "cards"),
    "credit": ("card", "visa", "mastercard"),
    "amex": ("american", "express"),
    "accept": ("accepted", "accepts"),
    "take": ("accept", "accepts", "takes"),
    "method": ("card", "pay", "ways"),
    "delete": ("deleted", "kept"),
    "gone": ("deleted", "delete"),
    "erase": ("deleted", "delete"),
    "keep": ("kept", "retain", "retained"),
    "retain": ("kept", "keep"),
    "store": ("kept", "keep"),
    "format": ("csv", "json", "pdf"),
    "file": ("csv", "json", "pdf"),
    "export": ("download", "csv", "json"),
    "download": ("export", "pdf"),
    "copy": ("pdf", "download"),
    "grab": ("download", "copy", "export"),
    "yearly": ("annual", "annually", "year"),
    "annually": ("annual", "year", "yearly"),
    "annual": ("year", "yearly", "annually"),
    "year": ("annual", "annually", "yearly"),
    "monthly": ("month",),
    "month": ("monthly",),
    "user": ("seat", "seats", "person", "people", "sign"),
    "people": ("seat", "seats", "person", "user", "staff"),
    "person": ("seat", "staff", "people"),
    "colleague": ("seat", "team", "people"),
    "member": ("seat", "team", "people"),
    "login": ("seat", "sign"),
    "seat": ("user", "users", "people"),
    "staff": ("person", "human", "team"),
    "human": ("staff", "person"),
    "agent": ("staff", "person", "human"),
    "hour": ("hours", "08:00", "monday", "friday"),
    "open": ("hours", "08:00", "monday"),
    "weekend": ("monday", "friday", "working"),
    "declined": ("failed", "fail", "declines"),
    "decline": ("failed", "declined"),
    "fail": ("failed", "declined"),
    "bounce": ("failed", "declined"),
    "retry": ("retried", "retries", "again"),
    "try": ("retry", "retried", "retries"),
    "locked": ("read", "restricted"),
    "lock": ("read", "restricted"),
    "blocked": ("read", "restricted"),
    "suspended": ("read", "restricted"),
    "frozen": ("read", "restricted"),
    "switch": ("change", "move", "switching"),
    "move": ("switch", "change", "moving"),
    "change": ("switch", "changed", "changes"),
    "convert": ("switch", "change"),
    "euro": ("eur", "€"),
    "pound": ("gbp", "£"),
    "sterling": ("gbp", "£"),
    "dollar": ("usd", "$"),
    "wire": ("bank", "transfer"),
    "reissue": ("reissued", "corrected"),
    "correct": ("reissue", "corrected"),
    "fix": ("reissue", "corrected"),
    "amend": ("reissue", "corrected"),
    "receipt": ("invoice",),
    "tax": ("vat",),
    "vat": ("tax",),
    "limit": ("unlimited", "allows", "maximum"),
    "cap": ("limit", "unlimited", "allows"),
    "maximum": ("limit", "unlimited", "most"),
    "max": ("limit", "unlimited", "most"),
    "quota": ("limit", "unlimited", "allows"),
    "cancel": ("cancellation", "cancelled", "cancelling"),
    "stop": ("cancel", "cancellation", "cancelled"),
    "quit": ("cancel", "cancellation"),
    "leave": ("cancel", "cancellation"),
    "downgrade": ("smaller", "lower", "down"),
    "smaller": ("downgrade", "lower"),
    "upgrade": ("bigger", "up"),
    "bigger": ("upgrade",),
    "immediately": ("once", "immediately", "effect"),
    "appear": ("reach", "statement", "see"),
    "show": ("appear", "statement"),
    "arrive": ("appear", "reach"),
    "statement": ("appear",),
    "approve": ("approval", "approved", "decide"),
    "approved": ("approval", "approve", "decide"),
    "approval": ("approve", "approved", "decide"),
    "decide": ("approval", "approved", "staff"),
    "partial": ("prorated", "part"),
    "prorated": ("partial", "part", "unused"),
    "part": ("partial", "prorated"),
    "unpaid": ("unpaid", "overdue"),
    "overdue": ("unpaid",),
    "dispute": ("chargeback",),
    "chargeback": ("dispute",),
    "currency": ("usd", "eur", "gbp"),
    "company": ("business", "details"),
    "address": ("details",),
    "support": ("staff", "assistant"),
    "contact": ("support", "staff"),
    "request": ("ask", "requested"),
    "ask": ("request", "requested"),
    "team": ("seat", "people"),
}

# Several asked words that mean one thing: folded phrase -> the words a passage may use.
PHRASES: dict[str, tuple[str, ...]] = {
    "how long": ("day", "days", "week", "month", "within", "business"),
    "how soon": ("day", "days", "immediately", "once", "within"),
    "how much": ("price", "cost", "costs", "$", "€", "£"),
    "money back": ("refund", "refunded"),
    "get back": ("refund", "refunded"),
    "hang on to": ("kept", "keep", "retain"),
    "hang onto": ("kept", "keep", "retain"),
    "hold on to": ("kept", "keep", "retain"),
    "hold onto": ("kept", "keep", "retain"),
    "get rid of": ("deleted", "delete"),
    "sign in": ("seat", "sign"),
    "log in": ("seat", "sign"),
    "two times": ("twice", "duplicate", "double"),
    "right away": ("once", "immediately", "effect"),
    "straight away": ("once", "immediately", "effect"),
    "at once": ("once", "immediately", "effect"),
    "show up": ("appear", "statement"),
    "far back": ("last", "days", "older"),
    "drop down": ("downgrade", "smaller", "down"),
    "move down": ("downgrade", "smaller", "down"),
    "move up": ("upgrade", "bigger", "up"),
    "wire transfer": ("bank", "transfer", "wire"),
    "bank transfer": ("bank", "transfer", "wire"),
    "direct debit": ("sepa", "direct", "debit"),
    "vat number": ("vat", "id"),
    "tax id": ("vat", "id"),
    "vat id": ("vat", "id"),
    "sign off": ("approve", "approval", "staff"),
    "per year": ("annual", "year", "annually"),
    "a year": ("annual", "year", "annually"),
    "per month": ("month", "monthly"),
    "a month": ("month", "monthly"),
    "take out": ("export",),
    "get out": ("export",),
    "read only": ("read",),
    # other languages
    "geld zuruck": ("refund", "refunded"),
    "neu ausstellen": ("reissue", "reissued"),
    "neu ausgestellt": ("reissue", "reissued"),
    "wie lange": ("day", "days", "week", "month", "within", "business"),
    "wie viel": ("price", "cost", "costs", "$"),
    "dos veces": ("twice", "duplicate", "double"),
    "deux fois": ("twice", "duplicate", "double"),
    "duas vezes": ("twice", "duplicate", "double"),
    "due volte": ("twice", "duplicate", "double"),
    "moyens de paiement": ("card", "pay", "payment", "ways"),
    "metodos de pago": ("card", "pay", "payment", "ways"),
    "metodi di pagamento": ("card", "pay", "payment", "ways"),
    "formas de pagamento": ("card", "pay", "payment", "ways"),
    "numero de tva": ("vat", "id"),
    "partita iva": ("vat", "id"),
    "dias uteis": ("business", "days"),
    "dias habiles": ("business", "days"),
    "giorni lavorativi": ("business", "days"),
    "jours ouvres": ("business", "days"),
    "combien de temps": ("day", "days", "week", "month", "within", "business"),
    "quanto tempo": ("day", "days", "week", "month", "within", "business"),
    "cuanto tiempo": ("day", "days", "week", "month", "within", "business"),
    "al ano": ("annual", "year", "annually"),
    "por ano": ("annual", "year", "annually"),
    "par an": ("annual", "year", "annually"),
    "all anno": ("annual", "year", "annually"),
    "im monat": ("month", "monthly"),
    "pro monat": ("month", "monthly"),
    "al mes": ("month", "monthly"),
    "par mois": ("month", "monthly"),
    "al mese": ("month", "monthly"),
    "por mes": ("month", "monthly"),
}


# Spanish, German, French, Portuguese and Italian billing words (and the commonest Dutch ones)
# -> English (folded keys).
def _by_meaning(table: str) -> dict[str, str]:
    """ "english: word word ..." lines (a line may continue indented) as word -> english."""
    mapping: dict[str, str] = {}
    for entry in re.split(r"\n(?=\S)", table.strip()):
        english, _, foreign = entry.partition(":")
        for word in foreign.split():
            mapping[word] = english.strip()
    return mapping


FOREIGN: dict[str, str] = _by_meaning(
    """
refund: terugbetaling reembolso reembolsos reembolsar devolucion devolver estorno devolucao
    erstattung ruckerstattung erstatten zuruckerstatten remboursement rembourser rembourse
    rimborso rimborsi rimborsare
invoice: factuur facturen factura facturas fatura faturas rechnung rechnungen facture
    factures fattura fatture
receipt: recibo quittung ricevuta recu
days: dagen dias tage tagen jours giorni
day: dia tag jour giorno
month: maand maanden mes meses monat monate monaten mois mese mesi
year: jaar ano anos jahr jahre annee anno anni
annual: jaarlijks anual jahrlich annuel annuelle annuale jahresabo
monthly: maandelijks mensual mensal monatlich mensuel mensuelle mensile monatsabo
time: tiempo tempo zeit temps
week: semana woche semaine settimana
business: habiles uteis werktage ouvres lavorativi
price: prijs precio precios preco precos preis preise prix prezzo prezzi tarifa tarif tariffa
cost: kost cuesta cuestan costo coste custa custo kosten kostet cout coute coutent costa costano
cheap: barato billig gunstig economico moins
subscription: suscripcion assinatura abo abonnement abbonamento
plan: plano piano tarifplan offre formule
user: usuarios usuario nutzer benutzer utilisateurs utilisateur utenti utente mitarbeiter
people: personas pessoas personen personnes persone
seat: lizenzen platze
team: equipo equipe squadra
upgrade: mejorar subir
downgrade: bajar
limit: limite grenze limit
card: kaart tarjeta tarjetas cartao cartoes karte karten kreditkarte carte cartes carta
payment: pago pagos pagamento zahlung zahlungen paiement
pay: pagar zahlen bezahlen payer pagare
transfer: transferencia uberweisung virement bonifico
sepa: lastschrift prelevement domiciliacion addebito
currency: moneda moeda wahrung devise monnaie valuta
euro: euros
pound: libras pfund livres sterline
dollar: dolares dollari
failed: fallido falhou fehlgeschlagen echoue fallito
declined: rechazado rechazada recusado abgelehnt refuse rifiutata rifiutato
locked: bloqueada bloqueado gesperrt bloque bloccato bloccata
charge: cobro cargo
charged: cobraron cobrado cobrada abgebucht belastet preleve addebitato
duplicate: duplicado doppelt doublon duplicada
accept: aceptan aceptais aceptar aceitam aceita aceitar akzeptiert akzeptieren acceptez
    accepter acceptees accettate accettare accettati nehmt nehmen
cancel: opzeggen cancelar cancelacion cancelamento kundigen kundigung gekundigt resilier resiliation
    annuler annulation disdire disdetta annullare baja
data: gegevens datos dados daten donnees dati
export: exportar exportieren exporter esportare esporta
format: formato formate
keep: guardan guardar conservan conservar guardam mantem manter gespeichert aufbewahrt
    aufbewahren behalten speichern gardez garder conservez conserver conservate conservare
    tenete
delete: borrar borrados eliminar eliminados apagados excluidos geloscht loschen supprimees
    supprimer effacees cancellati eliminati
account: cuenta konto compte conta account
address: direccion endereco adresse anschrift indirizzo
company: empresa firma entreprise societe azienda
vat: iva mwst umsatzsteuer mehrwertsteuer ust tva btw
tax: impuesto imposto steuer taxe tassa
support: soporte suporte assistance supporto assistenza kundendienst
hour: horario horarios offnungszeiten horaires orari orario
switch: cambiar trocar mudar wechseln changer cambiare
change: andern
reissue: ausstellen reemitir reemettre riemettere
correct: corrigir corregir korrigieren corriger correggere
request: pedir solicitar beantragen anfordern demander chiedere richiedere
appear: aparecer aparece cai erscheinen erscheint apparaitre apparire comparire
arrive: llega chega arrive arriva ankommt
approved: aprobado aprovado genehmigt approuve approvato
approval: aprobacion aprovacao genehmigung approbation approvazione
take: tarda tardan leva demora dauert dauern prend vuole
long: lange
    """
)


def words(text: str) -> frozenset[str]:
    """A word list written as running text (easier to read and review than quoted items)."""
    return frozenset(text.split())


# Function words of those languages: never a subject of the question.
FOREIGN_STOPWORDS = words(
    """
    el la los las un una unos unas de del al y o que en es son por para con como cual cuales
    cuando cuanto cuanta cuantos cuantas mi mis su sus tu tus nuestro nuestra nuestros lo le
    les se me nos puedo puede podemos hay tengo tiene tienen hacer despues antes sobre hola
    gracias si no ya muy mas
    der die das den dem des ein eine einen einem einer und oder ist sind bei mit zu zum zur
    fur von auf an aus im in ich wir sie es er mein meine meinen meiner unser unsere unseren
    unserer ihr ihre habe hat haben kann konnen wie was wann wo welche welcher welches nach
    noch auch nicht wenn mir mich uns man bitte hallo danke viel viele gibt werden wird bis
    lassen alte alten neue neuen neu nur schon dann denn ob
    le les du des une et ou que qui quoi ce cette ces vous nous je mes mon ma nos notre votre
    vos apres avant pour par sur avec est sont il elle on en au aux peut puis pouvez peux
    faut se sa son ses ne pas plus tres bonjour merci comment quand dans quel quels quelle
    quelles combien ai avez
    o os as um uma do da dos das e em no na nas meu minha meus minhas voces voce eu depois
    com pro pra qual quais quanto quantos quantas quanta posso pode ter tem sao isso esse
    essa ola obrigado
    il lo gli di dei della delle degli per su che mio miei mie nostro nostri vostro dopo
    prima quando si quanti quante quale quali ho hai ha avere possiamo ciao grazie sono
    wat hoe het een van voor met ik wij mijn onze kan kunnen
    """
)

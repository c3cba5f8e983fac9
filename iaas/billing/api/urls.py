from django.urls import path

from . import payment_views, views

urlpatterns = [
    path("wallets/", views.WalletListCreateView.as_view(), name="wallet-list"),
    path("wallets/<uuid:pk>/", views.WalletDetailView.as_view(), name="wallet-detail"),
    path("wallets/<uuid:wallet_id>/ledger/", views.LedgerView.as_view(), name="wallet-ledger"),
    path("wallets/<uuid:wallet_id>/top-ups/", views.TopUpListCreateView.as_view(), name="wallet-top-ups"),
    path(
        "wallets/<uuid:wallet_id>/top-ups/<uuid:top_up_id>/",
        views.TopUpDetailView.as_view(),
        name="wallet-top-up-detail",
    ),
    path(
        "wallets/<uuid:wallet_id>/auto-top-up/",
        payment_views.AutoTopUpView.as_view(),
        name="wallet-auto-top-up",
    ),
    path("payment-methods/", payment_views.PaymentMethodListCreateView.as_view(), name="payment-method-list"),
    path(
        "payment-methods/<uuid:pk>/",
        payment_views.PaymentMethodDetailView.as_view(),
        name="payment-method-detail",
    ),
    path("invoices/", views.InvoiceListView.as_view(), name="invoice-list"),
    path("invoices/<uuid:invoice_id>/", views.InvoiceDetailView.as_view(), name="invoice-detail"),
]

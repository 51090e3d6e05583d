"""Dataset CRUD, listing (pagination, filters, order) and the health summary, over gRPC."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture, image_bytes
from visionmesh.errors import bad_request_fields
from visionmesh.v1 import common_pb2, dataset_pb2

server = dataset_server_fixture([DEFAULT_BACKEND])
D = dataset_pb2
PUBLIC, PRIVATE = common_pb2.VISIBILITY_PUBLIC, common_pb2.VISIBILITY_PRIVATE


def _error(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_create_get_update_delete(server):
    alice = server.user("alice")
    ds = alice.create_dataset("  Cats  ", description="tabby and more")
    assert ds.name.startswith("datasets/") and ds.display_name == "Cats"
    assert ds.visibility == PRIVATE and ds.owner == f"users/{alice.username}"
    assert ds.create_time.seconds and not ds.labeled and ds.image_count == 0
    got = alice.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
    assert got.display_name == "Cats" and got.description == "tabby and more"

    updated = alice.datasets.UpdateDataset(
        D.UpdateDatasetRequest(
            dataset=D.Dataset(name=ds.name, display_name="Cats v2", description=""),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "description"]),
        )
    ).dataset
    assert (updated.display_name, updated.description) == ("Cats v2", "")
    assert updated.update_time.ToNanoseconds() >= ds.update_time.ToNanoseconds()
    # Empty mask: every writable field that is set.
    updated = alice.datasets.UpdateDataset(
        D.UpdateDatasetRequest(dataset=D.Dataset(name=ds.name, visibility=PUBLIC))
    ).dataset
    assert updated.visibility == PUBLIC and updated.display_name == "Cats v2"

    alice.datasets.DeleteDataset(D.DeleteDatasetRequest(name=ds.name))
    err = _error(lambda: alice.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_bad_fields_name_the_field(server):
    alice = server.user("alice")
    err = _error(lambda: alice.create_dataset(""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dataset.display_name" in bad_request_fields(err)
    err = _error(lambda: alice.create_dataset("x" * 201))
    assert "dataset.display_name" in bad_request_fields(err)
    err = _error(lambda: alice.create_dataset("ok", visibility=7))
    assert "dataset.visibility" in bad_request_fields(err)
    ds = alice.create_dataset("fine")
    err = _error(
        lambda: alice.datasets.UpdateDataset(
            D.UpdateDatasetRequest(
                dataset=D.Dataset(name=ds.name, owner="users/bob"),
                update_mask=field_mask_pb2.FieldMask(paths=["owner"]),
            )
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in bad_request_fields(
        err
    )
    for bad in ("", "datasets/", "projects/x", "datasets/UPPER"):
        err = _error(lambda bad=bad: alice.datasets.GetDataset(D.GetDatasetRequest(name=bad)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name" in bad_request_fields(err)


def test_list_pages_filters_and_order(server):
    carol, dan = server.user("carol"), server.user("dan")
    made = [carol.create_dataset(f"pets {i}", PUBLIC if i % 2 else PRIVATE) for i in range(5)]
    dan.create_dataset("dan's pets", PUBLIC)
    carol.upload(made[1].name, {"a.png": image_bytes(), "b.png": image_bytes(color=(0, 0, 1))})

    def names(**kw):
        return [
            d.display_name
            for d in carol.datasets.ListDatasets(D.ListDatasetsRequest(**kw)).datasets
        ]

    owner = f'owner="users/{carol.username}"'
    # Paging through everything with page_size 2 gives each dataset once, newest first.
    seen, token = [], ""
    while True:
        page = carol.datasets.ListDatasets(
            D.ListDatasetsRequest(page_size=2, page_token=token, filter=owner)
        )
        assert page.total_size == 5
        seen += [d.display_name for d in page.datasets]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"pets {i}" for i in reversed(range(5))]

    assert names(filter=f"{owner} visibility=VISIBILITY_PUBLIC", order_by="display_name") == [
        "pets 1",
        "pets 3",
    ]
    assert names(filter='display_name:"PETS 4"') == ["pets 4"]
    assert "dan's pets" in names(filter=f'owner="users/{dan.username}"')
    assert (
        names(filter=f"{owner} AND labeled=false", order_by="image_count desc, display_name")[0]
        == "pets 1"
    )
    assert names(filter=f"{owner} labeled=true") == []

    first = carol.datasets.ListDatasets(D.ListDatasetsRequest(page_size=1, filter=owner))
    err = _error(
        lambda: carol.datasets.ListDatasets(D.ListDatasetsRequest(page_token=first.next_page_token))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in bad_request_fields(
        err
    )
    for request in (
        D.ListDatasetsRequest(page_token="garbage!"),
        D.ListDatasetsRequest(filter="colour=red"),
        D.ListDatasetsRequest(filter="visibility=SECRET"),
        D.ListDatasetsRequest(order_by="owner sideways"),
        D.ListDatasetsRequest(page_size=-1),
    ):
        err = _error(lambda request=request: carol.datasets.ListDatasets(request))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert bad_request_fields(err), request
    big = carol.datasets.ListDatasets(D.ListDatasetsRequest(page_size=5000, filter=owner))
    assert len(big.datasets) == 5 and not big.next_page_token


def test_health_summary_counts_splits_and_sizes(server):
    erin = server.user("erin")
    ds = erin.create_dataset("health")
    erin.upload(
        ds.name,
        {
            "train/a.png": image_bytes(10, 20),
            "train/b.png": image_bytes(30, 40, color=(1, 1, 1)),
            "val/c.png": image_bytes(20, 30, color=(2, 2, 2)),
            "misc/d.png": image_bytes(20, 30, color=(3, 3, 3)),
        },
    )
    got = erin.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
    health = got.health
    assert got.image_count == 4 and got.total_bytes > 0
    assert dict(health.images_per_split) == {"train": 2, "val": 1, "": 1}
    assert health.unlabeled_image_count == 4
    assert (health.min_width, health.max_width, health.min_height, health.max_height) == (
        10,
        30,
        20,
        40,
    )
    assert health.mean_width == pytest.approx(20.0)
    # Listing does not compute the (costlier) health summary.
    listed = erin.datasets.ListDatasets(
        D.ListDatasetsRequest(filter='display_name="health"')
    ).datasets
    assert listed[0].image_count == 4 and not listed[0].HasField("health")
